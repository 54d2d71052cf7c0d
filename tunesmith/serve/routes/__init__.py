"""HTTP routes, thin: parse, call the service or store, shape the response."""
