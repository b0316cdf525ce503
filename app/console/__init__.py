"""The operator console at /console, the landing page at / and Swagger UI at /docs, every file served
from this package (no CDN): they work on a machine without internet."""
