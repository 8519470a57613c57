"""The monitoring API: HTTP/JSON read endpoints, a live event stream, Prometheus metrics.

The server (``http.py``) only talks to the node through the ``NodeView``
protocol (``view.py``), so the daemon owns the state and this package owns the
presentation.  ``limits.py`` bounds what clients can make it hold (connections,
timeouts, stream clients) and keeps its error log quiet.  ``client.py`` and
``table.py`` serve the ``show``/``monitor`` CLI.
"""
