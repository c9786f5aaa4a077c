"""Calendar providers. Google now; Microsoft 365 and CalDAV later behind the same shapes (``base``)."""
