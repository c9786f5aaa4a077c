"""The sidecar settings that point it at the two sandboxes (used by the demo and the tests)."""


def sidecar_settings(kivicare, google) -> dict:
    """``{"section.key": value}`` overrides for ``sidecar.config.Config``: KiviCare and Google only."""
    return {
        "kivicare.base_url": kivicare.base_url, "kivicare.username": kivicare.username,
        "kivicare.app_password": kivicare.app_password,
        "google.client_id": google.client_id, "google.client_secret": google.client_secret,
        "google.auth_uri": google.auth_uri, "google.token_uri": google.token_uri,
        "google.revoke_uri": google.revoke_uri, "google.api_endpoint": google.api_endpoint,
    }
