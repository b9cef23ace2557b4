"""HTTP: secure links, aggregator webview redirect and callback, the portal pages."""
