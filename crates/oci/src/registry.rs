//! Registry client: push and pull over the OCI distribution API (in progress).
