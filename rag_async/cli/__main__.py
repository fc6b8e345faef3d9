"""`python -m rag_async.cli`: how `up` starts its API and worker processes."""

from . import main

main()
