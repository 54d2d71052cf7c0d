"""The web console: runs, datasets, evaluations, deployments (and the review queue), server-rendered.

`app.create_ui_app(registry)` is the composition root (`tunesmith ui`, and `tunesmith serve --ui` at /ui);
`routes/` holds the pages, `queries` what they read and who may see it, `auth` the signed session cookie
and CSRF tokens, `charts` the inline SVG charts. Templates (Jinja2, autoescaped) and the stylesheet and
script ship in the package: the console works offline. Nothing here imports torch.
"""
