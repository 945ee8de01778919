"""Local emulators of the providers' APIs the fulfilment loop calls, for the tests and for
trying the walkthrough by hand (`python -m emulators NAME --port P ...`). Each answers with
the provider's documented bodies and checks each request's path, method, credentials and
body against the provider's published shapes; each can be told to fail. They import nothing
of the drivers they stand in for, so the two cannot agree by sharing code."""
