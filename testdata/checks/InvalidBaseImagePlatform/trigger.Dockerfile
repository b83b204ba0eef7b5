FROM arm64-only
RUN true
