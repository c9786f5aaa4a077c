<?php
/**
 * REST routes under `kc-sidecar/v1`, every one signed (PROTOCOL.md, "Sidecar → plugin").
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Route registration, the signature gate, body parsing and `GET /status`.
 */
final class KC_Sidecar_Rest {

	const NAMESPACE = 'kc-sidecar/v1';

	/** Features this plugin offers (PROTOCOL.md, `GET /status`). */
	const FEATURES = array( 'hints', 'busy', 'meet', 'reschedule', 'mail', 'sso' );

	/**
	 * Hooks route registration.
	 */
	public static function register(): void {
		add_action( 'rest_api_init', array( __CLASS__, 'routes' ) );
	}

	/**
	 * Registers every route.
	 */
	public static function routes(): void {
		$gate = array( __CLASS__, 'permission' );
		$id   = '/appointments/(?P<id>\d+)';
		register_rest_route( self::NAMESPACE, '/status', array( 'methods' => 'GET', 'callback' => array( __CLASS__, 'status' ), 'permission_callback' => $gate ) );
		register_rest_route( self::NAMESPACE, '/busy', array( 'methods' => 'PUT', 'callback' => array( 'KC_Sidecar_Busy', 'put' ), 'permission_callback' => $gate ) );
		register_rest_route(
			self::NAMESPACE,
			$id . '/meet',
			array(
				array( 'methods' => 'PUT', 'callback' => array( 'KC_Sidecar_Meet', 'put' ), 'permission_callback' => $gate ),
				array( 'methods' => 'DELETE', 'callback' => array( 'KC_Sidecar_Meet', 'delete' ), 'permission_callback' => $gate ),
			)
		);
		register_rest_route( self::NAMESPACE, $id . '/reschedule', array( 'methods' => 'POST', 'callback' => array( 'KC_Sidecar_Reschedule', 'post' ), 'permission_callback' => $gate ) );
		register_rest_route( self::NAMESPACE, '/mail', array( 'methods' => 'POST', 'callback' => array( 'KC_Sidecar_Mail', 'post' ), 'permission_callback' => $gate ) );
	}

	/**
	 * The signature gate of every route: a WP_Error here becomes the 401/503 answer.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return true|WP_Error
	 */
	public static function permission( $request ) {
		return KC_Sidecar_Signing::verify(
			KC_Sidecar_Plugin::secret(),
			$request->get_method(),
			self::request_path(),
			$request->get_header( KC_Sidecar_Signing::HEADER_TIMESTAMP ),
			$request->get_header( KC_Sidecar_Signing::HEADER_SIGNATURE ),
			(string) $request->get_body()
		);
	}

	/**
	 * The URL path exactly as requested (no scheme, host or query string).
	 */
	public static function request_path(): string {
		$uri = isset( $_SERVER['REQUEST_URI'] ) ? wp_unslash( $_SERVER['REQUEST_URI'] ) : '/'; // phpcs:ignore WordPress.Security.ValidatedSanitizedInput.InputNotSanitized -- compared byte for byte, never output.
		$path = wp_parse_url( (string) $uri, PHP_URL_PATH );
		return is_string( $path ) && '' !== $path ? $path : '/';
	}

	/**
	 * `GET /status`.
	 */
	public static function status(): WP_REST_Response {
		return new WP_REST_Response(
			array(
				'ok'               => true,
				'plugin_version'   => KC_SIDECAR_VERSION,
				'kivicare_version' => KC_Sidecar_Plugin::kivicare_version(),
				'features'         => self::FEATURES,
				'site_timezone'    => wp_timezone_string(),
			),
			200
		);
	}

	/**
	 * The JSON object in the raw body (the signed bytes), or a 400 error.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return array|WP_Error
	 */
	public static function json_body( $request ) {
		$data = json_decode( (string) $request->get_body(), true );
		return is_array( $data ) ? $data : self::error( 'kc_sidecar_bad_request', 'The body must be a JSON object.', 400 );
	}

	/**
	 * An error in WordPress's REST shape.
	 *
	 * @param string $code    Machine code.
	 * @param string $message Human text (never a secret).
	 * @param int    $status  HTTP status.
	 */
	public static function error( string $code, string $message, int $status ): WP_Error {
		return new WP_Error( $code, $message, array( 'status' => $status ) );
	}

	/**
	 * A success answer `{"ok": true, …}`.
	 *
	 * @param array $fields Extra fields.
	 * @param int   $status HTTP status.
	 */
	public static function ok( array $fields = array(), int $status = 200 ): WP_REST_Response {
		return new WP_REST_Response( array( 'ok' => true ) + $fields, $status );
	}
}
