"""The console's pages, one module per area; each route reads through `queries` or a store and renders."""
