"""The web console: HTML pages served by the embedded control plane (see docs/web.md).

Nothing is imported here: the app builds the routes (``routes.web_routes``) on the first
request for a page, so a control plane that only serves agents never loads jinja2 or numpy.
"""
