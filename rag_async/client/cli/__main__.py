"""`python -m rag_async.client.cli`: how `up` starts its API and worker processes."""

from rag_async.client.cli import main

main()
