//! The build definition: ops, inputs and digests. No I/O, no async.
