"""webhook-router: verified webhooks into RabbitMQ, nothing lost."""
