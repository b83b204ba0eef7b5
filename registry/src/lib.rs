//! OCI image model, exporters and the distribution client (issue: registry).
