"""Request handling: the URL grammar, the aiohttp app and its handlers, responses, errors, connection bounds."""
