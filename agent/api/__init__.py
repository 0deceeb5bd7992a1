"""The protocol, client side: one typed client; nothing outside this package builds a URL."""
