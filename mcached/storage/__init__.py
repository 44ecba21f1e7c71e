"""Item storage: keys and bytes in, result enums out. No sockets, no wire text."""
