"""Payments: bank guarantees (holds on a card through Stripe), saved cards, the provider's webhook."""
