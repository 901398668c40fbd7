"""First-stage candidates: shipped runs, bm25s retrieval, a TREC run file, or the full corpus."""
