"""Entry points: the HTTP API, the command line, the demo, and the operations on trials they
share."""
