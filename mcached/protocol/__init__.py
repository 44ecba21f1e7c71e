"""memcached's text protocol: bytes in, commands out, and replies back to bytes. No sockets."""
