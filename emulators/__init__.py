"""Local stand-ins for the outside APIs the fulfilment loop calls (EasyPost, Shopify's Admin
GraphQL, WooCommerce's REST API), for tests, the soak and trying the walkthrough by hand, as
stripe-mock is for Stripe: each answers with the provider's documented bodies, checks each
request's path, method, credentials and body against the provider's published shapes, keeps
its state in memory, and can be told to fail. They import nothing of the router or the
consumers: they play the provider, and a bug of ours must not be copied into the referee.

    python -m emulators easypost --port 12011 --key KEY
    python -m emulators shopify --port 12012 --token TOKEN
    python -m emulators woocommerce --port 12013 --key KEY --secret SECRET
"""
