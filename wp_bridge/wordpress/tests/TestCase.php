<?php
/**
 * Base test case: a blank stubbed site, the fake storage and a configured bridge.
 *
 * @package KC_Sidecar
 */

use PHPUnit\Framework\TestCase;

/**
 * Shared set-up and helpers.
 */
abstract class KC_Test_Case extends TestCase {

	const SECRET = 'unit-test-secret-0123456789abcdef';

	/** @var KC_Test_FakeDB */
	protected $db;

	protected function setUp(): void {
		KC_Test::reset();
		$this->db = new KC_Test_FakeDB();
		KC_Sidecar_Plugin::set_db( $this->db );
		KC_Sidecar_Meet::reset_cache();
		KC_Sidecar_Hints::reset();
		update_option( KC_Sidecar_Plugin::OPT_URL, 'https://sidecar.example' );
		update_option( KC_Sidecar_Plugin::OPT_SECRET, self::SECRET );
		KC_Sidecar_Hints::register();
		KC_Sidecar_Busy::register();
		KC_Sidecar_Meet::register();
		KC_Sidecar_SSO::register();
		$_SERVER['REQUEST_URI'] = '/';
	}

	/**
	 * A REST request with a JSON body.
	 *
	 * @param string $method HTTP method.
	 * @param mixed  $body   Array (encoded) or raw string.
	 * @param array  $params URL parameters (e.g. id).
	 */
	protected function request( string $method, $body = '', array $params = array() ): WP_REST_Request {
		$request = new WP_REST_Request( $method, '', $params );
		$request->set_body( is_string( $body ) ? $body : json_encode( $body ) );
		return $request;
	}

	/**
	 * A kc_appointments row (UTC columns consistent with the local ones in $tz).
	 *
	 * @param int    $id        Appointment id.
	 * @param string $start_utc `Y-m-d H:i:s` UTC.
	 * @param int    $minutes   Duration.
	 * @param array  $extra     Column overrides.
	 */
	protected function appointment( int $id, string $start_utc, int $minutes, array $extra = array() ): array {
		$tz    = new DateTimeZone( $extra['appointment_timezone'] ?? 'America/New_York' );
		$start = new DateTimeImmutable( $start_utc, new DateTimeZone( 'UTC' ) );
		$end   = $start->modify( "+{$minutes} minutes" );
		$row   = $extra + array(
			'id'                     => (string) $id,
			'doctor_id'              => '3',
			'patient_id'             => '7',
			'clinic_id'              => '1',
			'status'                 => '1',
			'description'            => 'keep me',
			'appointment_timezone'   => 'America/New_York',
			'appointment_start_date' => $start->setTimezone( $tz )->format( 'Y-m-d' ),
			'appointment_start_time' => $start->setTimezone( $tz )->format( 'H:i:s' ),
			'appointment_end_date'   => $end->setTimezone( $tz )->format( 'Y-m-d' ),
			'appointment_end_time'   => $end->setTimezone( $tz )->format( 'H:i:s' ),
			'appointment_start_utc'  => $start->format( 'Y-m-d H:i:s' ),
			'appointment_end_utc'    => $end->format( 'Y-m-d H:i:s' ),
		);
		$this->db->appointments[ $id ] = $row;
		return $row;
	}

	/**
	 * Asserts a WP_Error with a code and HTTP status.
	 *
	 * @param string $code   Expected code.
	 * @param int    $status Expected status.
	 * @param mixed  $result Actual result.
	 */
	protected function assertError( string $code, int $status, $result ): void {
		$this->assertInstanceOf( WP_Error::class, $result, 'expected an error, got ' . json_encode( $result instanceof WP_REST_Response ? $result->get_data() : $result ) );
		$this->assertSame( $code, $result->get_error_code() );
		$this->assertSame( $status, $result->get_error_data()['status'] );
	}
}
