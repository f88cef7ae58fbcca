mod ingest;
