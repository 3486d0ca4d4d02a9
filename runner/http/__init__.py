"""The wire: the API client, its transport, classifying what came back, URL downloads."""
