//! An S3-compatible server on loopback (filled in by the artifact store work).
