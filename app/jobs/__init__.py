"""Background training: the job queue in the database, the worker process, and version publishing."""
