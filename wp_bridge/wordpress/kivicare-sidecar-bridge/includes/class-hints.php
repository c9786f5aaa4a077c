<?php
/**
 * Hints (PROTOCOL.md, "Plugin → sidecar: Hints").
 *
 * KiviCare's appointment hooks only queue (event, id); the queue is sent at `shutdown`, after the
 * response, as signed fire-and-forget POSTs to `{sidecar}/hooks/kivicare`. A lost hint only costs
 * latency: the sidecar's poll catches up.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Queues and sends hints.
 */
final class KC_Sidecar_Hints {

	/** KiviCare actions whose first argument is the appointment id. */
	const EVENTS = array( 'kc_after_create_appointment', 'kc_appointment_updated', 'kc_appointment_status_update', 'kc_appointment_cancelled', 'kc_appointment_deleted' );

	/** Sent after a reschedule through this plugin. */
	const RESCHEDULED = 'kc_sidecar_rescheduled';

	/** At most this many hints per request (KiviCare's nightly auto-close can touch hundreds). */
	const MAX_PER_REQUEST = 50;

	/** Seconds to connect; PROTOCOL.md allows at most 1. */
	const TIMEOUT = 1;

	/** @var string[] Appointment id => latest event of this request. */
	private static $queue = array();

	/** @var bool Whether the client already has its response (FPM / LiteSpeed). */
	private static $response_done = false;

	/**
	 * Hooks KiviCare's actions and the sender.
	 */
	public static function register(): void {
		foreach ( self::EVENTS as $event ) {
			add_action(
				$event,
				static function ( $appointment_id ) use ( $event ) {
					self::queue( $event, $appointment_id );
				},
				99,
				1
			);
		}
		add_action( 'shutdown', array( __CLASS__, 'flush' ), 100 );
		add_action( 'requests-requests.before_request', array( __CLASS__, 'fire_and_forget' ), 10, 5 );
	}

	/**
	 * Queues a hint; one per appointment and request, the latest event wins (the sidecar re-reads
	 * the appointment anyway, so the event name is only informative).
	 *
	 * @param string $event          Hook name.
	 * @param mixed  $appointment_id KiviCare appointment id.
	 */
	public static function queue( string $event, $appointment_id ): void {
		$id = is_scalar( $appointment_id ) ? (string) absint( $appointment_id ) : '0';
		if ( '0' === $id ) {
			return;
		}
		unset( self::$queue[ $id ] ); // Keep insertion order = order of the last change.
		self::$queue[ $id ] = $event;
	}

	/**
	 * The queued hints (tests).
	 *
	 * @return string[] Appointment id => event.
	 */
	public static function queued(): array {
		return self::$queue;
	}

	/**
	 * Empties the queue without sending (tests).
	 */
	public static function reset(): void {
		self::$queue         = array();
		self::$response_done = false;
	}

	/**
	 * Sends the queue at `shutdown`.
	 *
	 * Under PHP-FPM or LiteSpeed the client gets its response first; the hints then go out with
	 * the normal transport, which waits at most TIMEOUT for the sidecar's 202 (reliable, and the
	 * user no longer waits). Elsewhere (mod_php, the CLI server) the response only ends with the
	 * script, so each hint is written and the socket closed without waiting (see fire_and_forget()).
	 */
	public static function flush(): void {
		if ( ! self::$queue || ! KC_Sidecar_Plugin::configured() ) {
			self::$queue = array();
			return;
		}
		if ( function_exists( 'fastcgi_finish_request' ) ) {
			self::$response_done = fastcgi_finish_request();
		} elseif ( function_exists( 'litespeed_finish_request' ) ) {
			self::$response_done = (bool) litespeed_finish_request();
		}
		$queue       = array_slice( self::$queue, 0, self::MAX_PER_REQUEST, true );
		self::$queue = array();
		foreach ( $queue as $id => $event ) {
			self::send( $event, (string) $id );
		}
	}

	/**
	 * One signed, non-blocking POST.
	 *
	 * @param string $event          Hook name.
	 * @param string $appointment_id Appointment id as text.
	 */
	public static function send( string $event, string $appointment_id ): void {
		$url  = KC_Sidecar_Plugin::sidecar_url() . '/hooks/kivicare';
		$body = (string) wp_json_encode(
			array(
				'event'          => $event,
				'appointment_id' => $appointment_id,
				'site'           => home_url(),
				'sent_at'        => time(),
			),
			JSON_UNESCAPED_SLASHES
		);
		wp_remote_post(
			$url,
			array(
				'blocking' => false,
				'timeout'  => self::TIMEOUT,
				'headers'  => array( 'Content-Type' => 'application/json' ) + KC_Sidecar_Signing::headers( KC_Sidecar_Plugin::secret(), 'POST', $url, $body ),
				'body'     => $body,
			)
		);
	}

	/**
	 * Makes our non-blocking requests truly fire-and-forget while the client still waits.
	 *
	 * WordPress's cURL transport waits for the answer even with `blocking => false` (up to the
	 * timeout, at least 1 s), which would hold the booking request under mod_php or the CLI
	 * server. The socket transport writes the request and closes: only the connect costs time.
	 * Applied only to non-blocking requests that carry our signature header, and only when the
	 * response could not be finished first.
	 *
	 * @param string $url     Request URL.
	 * @param array  $headers Request headers.
	 * @param mixed  $data    Body.
	 * @param string $type    Method.
	 * @param array  $options Requests options (by reference).
	 */
	public static function fire_and_forget( &$url, &$headers, &$data, &$type, &$options ): void {
		if ( self::$response_done || ! is_array( $options ) || ! empty( $options['blocking'] ) || ! is_array( $headers ) || ! isset( $headers[ KC_Sidecar_Signing::HEADER_SIGNATURE ] ) ) {
			return;
		}
		$transport = class_exists( 'WpOrg\Requests\Transport\Fsockopen' ) ? 'WpOrg\Requests\Transport\Fsockopen' : 'Requests_Transport_fsockopen';
		$ssl       = 0 === stripos( (string) $url, 'https://' );
		if ( class_exists( $transport ) && $transport::test( array( 'ssl' => $ssl ) ) ) {
			$options['transport']       = $transport;
			$options['connect_timeout'] = self::TIMEOUT;
		}
	}
}
