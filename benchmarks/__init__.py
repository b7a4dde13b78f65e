"""``make bench`` (``python -m benchmarks``) and ``python -m benchmarks.soak``.

Figures are printed as ratios against a baseline measured in the same run: a bare Flask app under
the same gunicorn settings (over HTTP) and ``json.loads`` of the same body (in process).
"""
