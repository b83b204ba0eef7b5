//! Word expansion: a port of BuildKit's `frontend/dockerfile/shell` lexer.
