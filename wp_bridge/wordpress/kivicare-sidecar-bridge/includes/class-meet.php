<?php
/**
 * Meet links: the sidecar stores an appointment's Google Meet URL in this plugin's own table;
 * KiviCare's read filters then mark the appointment as a video consultation and carry the join
 * link where its dashboard looks (`zoom_data.startUrl`) plus `google_meet_link`. The first time a
 * link is stored, the patient gets an e-mail (switchable).
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * The Meet routes and filters.
 */
final class KC_Sidecar_Meet {

	/** @var array<int, string|null> Per-request cache: appointment id => URL or null. */
	private static $cache = array();

	/**
	 * Hooks KiviCare's read filters.
	 */
	public static function register(): void {
		add_filter( 'kc_is_video_consultation', array( __CLASS__, 'is_video' ), 10, 2 );
		add_filter( 'kc_appointment_list_item', array( __CLASS__, 'decorate' ), 10, 2 );
		add_filter( 'kc_appointment_data', array( __CLASS__, 'decorate' ), 10, 2 );
		add_filter( 'kc_appointment_details_data', array( __CLASS__, 'decorate' ), 10, 2 );
	}

	/**
	 * `PUT /appointments/{id}/meet {"url","event_id","calendar_id"}`.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public static function put( $request ) {
		$id   = absint( $request['id'] );
		$data = KC_Sidecar_Rest::json_body( $request );
		if ( is_wp_error( $data ) ) {
			return $data;
		}
		$url = isset( $data['url'] ) && is_string( $data['url'] ) ? trim( $data['url'] ) : '';
		if ( strlen( $url ) > 2048 || 'https' !== wp_parse_url( $url, PHP_URL_SCHEME ) || esc_url_raw( $url, array( 'https' ) ) !== $url ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', 'url must be an https URL.', 400 );
		}
		$row = KC_Sidecar_Plugin::db()->appointment( $id );
		if ( null === $row ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_not_found', 'No such appointment.', 404 );
		}
		$first = KC_Sidecar_Plugin::db()->meet_put( $id, $url, self::text( $data, 'event_id' ), self::text( $data, 'calendar_id' ) );
		if ( null === $first ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_storage_failed', 'The link could not be stored.', 500 );
		}
		self::$cache[ $id ] = $url;
		if ( $first ) {
			KC_Sidecar_Mail::to_patient( 'meet', $row, array( '{meet_link}' => $url ) );
		}
		return KC_Sidecar_Rest::ok( array( 'first' => $first ) );
	}

	/**
	 * `DELETE /appointments/{id}/meet` (the appointment stopped being telemedicine).
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public static function delete( $request ) {
		$id = absint( $request['id'] );
		if ( ! KC_Sidecar_Plugin::db()->meet_delete( $id ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_storage_failed', 'The link could not be removed.', 500 );
		}
		self::$cache[ $id ] = null;
		return KC_Sidecar_Rest::ok();
	}

	/**
	 * The stored join URL of an appointment, or null.
	 *
	 * @param int $appointment_id KiviCare appointment id.
	 */
	public static function url( int $appointment_id ): ?string {
		if ( $appointment_id <= 0 ) {
			return null;
		}
		if ( ! array_key_exists( $appointment_id, self::$cache ) ) {
			$row                            = KC_Sidecar_Plugin::db()->meet_get( $appointment_id );
			self::$cache[ $appointment_id ] = $row ? (string) $row['url'] : null;
		}
		return self::$cache[ $appointment_id ];
	}

	/**
	 * Forgets cached look-ups (tests).
	 */
	public static function reset_cache(): void {
		self::$cache = array();
	}

	/**
	 * `kc_is_video_consultation($is, $appointmentId)`: true when a link is stored.
	 *
	 * @param mixed $is             What other filters decided.
	 * @param mixed $appointment_id Appointment id.
	 */
	public static function is_video( $is, $appointment_id ) {
		return null !== self::url( absint( $appointment_id ) ) ? true : $is;
	}

	/**
	 * Adds the join link to an appointment array (list item, `GET /{id}`, `/{id}/view`).
	 *
	 * The second argument is the row object (list, view) or the id (`kc_appointment_data`); the
	 * array's own `id` is used first. A `zoom_data` set by a real Zoom add-on is left alone.
	 *
	 * @param mixed $item  Appointment array built by KiviCare.
	 * @param mixed $extra Row object or id.
	 * @return mixed
	 */
	public static function decorate( $item, $extra = null ) {
		if ( ! is_array( $item ) ) {
			return $item;
		}
		$id = isset( $item['id'] ) ? absint( $item['id'] ) : 0;
		if ( ! $id ) {
			$id = is_object( $extra ) && isset( $extra->id ) ? absint( $extra->id ) : ( is_scalar( $extra ) ? absint( $extra ) : 0 );
		}
		$url = self::url( $id );
		if ( null === $url ) {
			return $item;
		}
		$item['video_consultation'] = true;
		$item['google_meet_link']   = $url;
		if ( empty( $item['zoom_data'] ) ) {
			$item['zoom_data'] = array(
				'startUrl' => $url,
				'joinUrl'  => $url,
			);
		}
		return $item;
	}

	/**
	 * A short text field of the body.
	 *
	 * @param array  $data Body.
	 * @param string $key  Field.
	 */
	private static function text( array $data, string $key ): string {
		return isset( $data[ $key ] ) && is_scalar( $data[ $key ] ) ? mb_substr( sanitize_text_field( (string) $data[ $key ] ), 0, 255 ) : '';
	}
}
