//! PostgreSQL in a temp dir (filled in by the Store work).
