"""Local stand-ins for the outside APIs the fulfilment loop calls (EasyPost, ...), for tests,
the soak and the README's walkthrough, as stripe-mock is for Stripe: each answers with the
provider's documented bodies, checks requests as the provider would, keeps its state in
memory, and can be told to fail. They import nothing of the router or the consumers: they
play the provider, and a bug of ours must not be copied into the referee.

    python -m emulators easypost --port 12011 --key KEY
"""
