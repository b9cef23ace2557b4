"""Partner mode: secure links, webview round trip, broken-connection alerts."""
