"""A shop's catalog: prices and recommendations, cached in memcached."""
