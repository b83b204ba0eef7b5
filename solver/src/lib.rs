//! The solver: runs an `llb::Definition` as a DAG with content-addressed caching (issue: solver and build).
