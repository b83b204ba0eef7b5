//! The sandbox: runs RUN steps in Linux namespaces on overlay snapshots (issue: sandbox).
