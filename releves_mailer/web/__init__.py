"""HTTP: secure links, aggregator webview redirect and callback, the test bank's webview."""
