<?php
/**
 * Mail: the sidecar's relay (`POST /mail`) and the two patient e-mails ("Meet link available",
 * "appointment moved"), all through the site's own `wp_mail`.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Mail relay and patient templates.
 */
final class KC_Sidecar_Mail {

	/** Most recipients accepted by the relay. */
	const MAX_RECIPIENTS = 50;

	/** Both e-mails and relayed alerts are plain text, whatever a mail plugin prefers. */
	const HEADERS = array( 'Content-Type: text/plain; charset=UTF-8' );

	/** Placeholders the templates may use. */
	const PLACEHOLDERS = array( '{patient_name}', '{doctor_name}', '{appointment_date}', '{appointment_time}', '{timezone}', '{meet_link}', '{previous_date}', '{previous_time}', '{site_name}' );

	/**
	 * The default templates; `enabled` switches each e-mail.
	 *
	 * @return array[] key => enabled, subject, body.
	 */
	public static function defaults(): array {
		return array(
			'meet'  => array(
				'enabled' => true,
				'subject' => 'Your video consultation link for {appointment_date}',
				'body'    => "Hello {patient_name},\n\nYour appointment with {doctor_name} on {appointment_date} at {appointment_time} ({timezone}) is a video consultation.\n\nJoin it here: {meet_link}\n\n{site_name}",
			),
			'moved' => array(
				'enabled' => true,
				'subject' => 'Your appointment has moved to {appointment_date}',
				'body'    => "Hello {patient_name},\n\nYour appointment with {doctor_name} has moved from {previous_date} at {previous_time} to {appointment_date} at {appointment_time} ({timezone}).\n\n{site_name}",
			),
		);
	}

	/**
	 * The saved templates merged over the defaults.
	 *
	 * @return array[]
	 */
	public static function templates(): array {
		$saved = get_option( KC_Sidecar_Plugin::OPT_TEMPLATES, array() );
		$out   = self::defaults();
		foreach ( $out as $key => $template ) {
			if ( isset( $saved[ $key ] ) && is_array( $saved[ $key ] ) ) {
				$out[ $key ] = array_merge( $template, array_intersect_key( $saved[ $key ], $template ) );
			}
		}
		return $out;
	}

	/**
	 * `POST /mail {"to":[…],"subject","text"}`.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public static function post( $request ) {
		$data = KC_Sidecar_Rest::json_body( $request );
		if ( is_wp_error( $data ) ) {
			return $data;
		}
		$to      = isset( $data['to'] ) && is_array( $data['to'] ) ? array_values( $data['to'] ) : array();
		$subject = isset( $data['subject'] ) && is_string( $data['subject'] ) ? self::one_line( $data['subject'] ) : '';
		$text    = isset( $data['text'] ) && is_string( $data['text'] ) ? $data['text'] : null;
		$valid   = array_filter( $to, static fn( $address ) => is_string( $address ) && is_email( $address ) );
		if ( ! $to || count( $to ) > self::MAX_RECIPIENTS || count( $valid ) !== count( $to ) || '' === $subject || null === $text ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', sprintf( 'Need 1 to %d valid addresses in to, a subject and a text.', self::MAX_RECIPIENTS ), 400 );
		}
		if ( ! wp_mail( $to, $subject, $text, self::HEADERS ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_mail_failed', 'The site could not send the e-mail (wp_mail returned false).', 502 );
		}
		return KC_Sidecar_Rest::ok();
	}

	/**
	 * E-mails the appointment's patient with a template, unless switched off or no address.
	 *
	 * @param string $key  'meet' or 'moved'.
	 * @param array  $row  The `kc_appointments` row (after the change).
	 * @param array  $vars Extra placeholder => value.
	 * @return bool Whether an e-mail was handed to wp_mail successfully.
	 */
	public static function to_patient( string $key, array $row, array $vars = array() ): bool {
		$templates = self::templates();
		$patient   = get_userdata( (int) ( $row['patient_id'] ?? 0 ) );
		if ( empty( $templates[ $key ]['enabled'] ) || ! $patient || ! is_email( $patient->user_email ) ) {
			return false;
		}
		$vars = self::vars( $row, $patient ) + $vars + array_fill_keys( self::PLACEHOLDERS, '' );
		return (bool) wp_mail(
			$patient->user_email,
			self::one_line( strtr( (string) $templates[ $key ]['subject'], $vars ) ),
			strtr( (string) $templates[ $key ]['body'], $vars ),
			self::HEADERS
		);
	}

	/**
	 * Placeholder values for an appointment, in its own timezone and the site's formats.
	 *
	 * @param array   $row     The `kc_appointments` row.
	 * @param WP_User $patient The patient.
	 * @return array placeholder => value.
	 */
	public static function vars( array $row, $patient ): array {
		$doctor = get_userdata( (int) ( $row['doctor_id'] ?? 0 ) );
		$zone   = KC_Sidecar_Time::appointment_zone( $row );
		list( $start ) = KC_Sidecar_Time::appointment_span( $row );
		return array(
			'{patient_name}'     => (string) $patient->display_name,
			'{doctor_name}'      => $doctor ? (string) $doctor->display_name : '',
			'{appointment_date}' => self::date( $start, $zone ),
			'{appointment_time}' => self::time( $start, $zone ),
			'{timezone}'         => $zone->getName(),
			'{site_name}'        => wp_specialchars_decode( (string) get_option( 'blogname' ), ENT_QUOTES ),
		);
	}

	/**
	 * A date in the site's date format.
	 *
	 * @param DateTimeInterface $time Instant.
	 * @param DateTimeZone      $zone Zone to show it in.
	 */
	public static function date( DateTimeInterface $time, DateTimeZone $zone ): string {
		return (string) wp_date( (string) get_option( 'date_format', 'Y-m-d' ), $time->getTimestamp(), $zone );
	}

	/**
	 * A time in the site's time format.
	 *
	 * @param DateTimeInterface $time Instant.
	 * @param DateTimeZone      $zone Zone to show it in.
	 */
	public static function time( DateTimeInterface $time, DateTimeZone $zone ): string {
		return (string) wp_date( (string) get_option( 'time_format', 'H:i' ), $time->getTimestamp(), $zone );
	}

	/**
	 * Removes line breaks (no header injection through a subject).
	 *
	 * @param string $text Text.
	 */
	private static function one_line( string $text ): string {
		return trim( (string) preg_replace( '/[\r\n]+/', ' ', $text ) );
	}
}
