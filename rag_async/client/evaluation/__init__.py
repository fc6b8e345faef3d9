"""Retrieval evaluation (`rag-async eval`): a file of questions, each with the document that
answers it, asked of POST /search and scored (recall@k, MRR@10) with the misses named."""
