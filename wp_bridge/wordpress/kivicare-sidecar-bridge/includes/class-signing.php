<?php
/**
 * Signing (PROTOCOL.md, "Signing every request" and "Single sign-on").
 *
 * message   = METHOD "\n" PATH "\n" TIMESTAMP "\n" BODY
 * signature = "v1=" + hex(HMAC-SHA256(secret, message))
 * SSO token = base64url(payload_json) "." hex(HMAC-SHA256(secret, "sso\n" + base64url(payload_json)))
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * HMAC signing and verification, pure functions.
 */
final class KC_Sidecar_Signing {

	const HEADER_TIMESTAMP = 'X-KC-Sidecar-Timestamp';
	const HEADER_SIGNATURE = 'X-KC-Sidecar-Signature';

	/** Largest accepted |now - timestamp|, in seconds. */
	const WINDOW = 300;

	/**
	 * The signed message.
	 *
	 * @param string $method    HTTP method.
	 * @param string $path      URL path as requested, without scheme, host or query.
	 * @param string $timestamp Unix seconds, as sent.
	 * @param string $body      Raw body ('' when none).
	 */
	public static function message( string $method, string $path, string $timestamp, string $body ): string {
		return strtoupper( $method ) . "\n" . $path . "\n" . $timestamp . "\n" . $body;
	}

	/**
	 * The `X-KC-Sidecar-Signature` value.
	 *
	 * @param string $secret    Shared secret (its UTF-8 text bytes).
	 * @param string $method    HTTP method.
	 * @param string $path      URL path.
	 * @param string $timestamp Unix seconds, as text.
	 * @param string $body      Raw body.
	 */
	public static function sign( string $secret, string $method, string $path, string $timestamp, string $body ): string {
		return 'v1=' . hash_hmac( 'sha256', self::message( $method, $path, $timestamp, $body ), $secret );
	}

	/**
	 * Both signing headers for an outgoing request.
	 *
	 * @param string   $secret Shared secret.
	 * @param string   $method HTTP method.
	 * @param string   $url    Full URL (only its path is signed).
	 * @param string   $body   Raw body.
	 * @param int|null $now    Unix time (tests).
	 * @return array Header name => value.
	 */
	public static function headers( string $secret, string $method, string $url, string $body, ?int $now = null ): array {
		$timestamp = (string) ( $now ?? time() );
		$path      = (string) wp_parse_url( $url, PHP_URL_PATH );
		return array(
			self::HEADER_TIMESTAMP => $timestamp,
			self::HEADER_SIGNATURE => self::sign( $secret, $method, '' === $path ? '/' : $path, $timestamp, $body ),
		);
	}

	/**
	 * Checks an incoming request.
	 *
	 * @param string      $secret    Shared secret ('' = not configured).
	 * @param string      $method    HTTP method.
	 * @param string      $path      URL path as requested.
	 * @param string|null $timestamp `X-KC-Sidecar-Timestamp`.
	 * @param string|null $signature `X-KC-Sidecar-Signature`.
	 * @param string      $body      Raw body.
	 * @param int|null    $now       Unix time (tests).
	 * @return true|WP_Error 503 not configured, 401 bad signature or stale request.
	 */
	public static function verify( string $secret, string $method, string $path, ?string $timestamp, ?string $signature, string $body, ?int $now = null ) {
		if ( '' === $secret ) {
			return new WP_Error( 'kc_sidecar_not_configured', 'The sidecar bridge has no shared secret yet.', array( 'status' => 503 ) );
		}
		$bad = new WP_Error( 'kc_sidecar_bad_signature', 'The request signature is missing or wrong.', array( 'status' => 401 ) );
		if ( null === $timestamp || null === $signature || ! preg_match( '/^\d{1,12}$/', $timestamp ) ) {
			return $bad;
		}
		if ( ! hash_equals( self::sign( $secret, $method, $path, $timestamp, $body ), $signature ) ) {
			return $bad;
		}
		if ( abs( ( $now ?? time() ) - (int) $timestamp ) > self::WINDOW ) {
			return new WP_Error( 'kc_sidecar_stale_request', 'The request timestamp is more than 5 minutes away from this server\'s clock.', array( 'status' => 401 ) );
		}
		return true;
	}

	/**
	 * A single sign-on token for the sidecar's `/sso`.
	 *
	 * @param string $secret  Shared secret.
	 * @param array  $payload uid, roles, name, email, exp, jti, site.
	 */
	public static function sso_token( string $secret, array $payload ): string {
		$encoded = self::base64url( (string) wp_json_encode( $payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE ) );
		return $encoded . '.' . hash_hmac( 'sha256', "sso\n" . $encoded, $secret );
	}

	/**
	 * URL-safe base64 without padding.
	 *
	 * @param string $raw Bytes.
	 */
	public static function base64url( string $raw ): string {
		return rtrim( strtr( base64_encode( $raw ), '+/', '-_' ), '=' ); // phpcs:ignore WordPress.PHP.DiscouragedPHPFunctions.obfuscation_base64_encode
	}
}
