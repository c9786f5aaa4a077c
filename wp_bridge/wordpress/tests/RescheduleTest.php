<?php
/**
 * Safe reschedule: duration kept, local columns written through the model, refusals.
 *
 * @package KC_Sidecar
 */

/**
 * Stand-in for KiviCare's appointment model: update() writes the given local columns and, like
 * KiviCare's save(), recomputes the UTC columns from them in the appointment's zone.
 */
class KC_Test_Appointment_Model {
	/** @var KC_Test_FakeDB */
	public static $db;
	/** @var array[] update() calls. */
	public static $updates = array();
	/** @var mixed What update() returns (null = the id). */
	public static $result = null;
	/** @var int */
	public $id;

	public static function find( $id ) {
		if ( ! isset( self::$db->appointments[ (int) $id ] ) ) {
			return null;
		}
		$model     = new self();
		$model->id = (int) $id;
		return $model;
	}

	public function update( array $data ) {
		self::$updates[] = $data;
		if ( null !== self::$result ) {
			return self::$result;
		}
		$row  = &self::$db->appointments[ $this->id ];
		$map  = array( 'appointmentStartDate' => 'appointment_start_date', 'appointmentStartTime' => 'appointment_start_time', 'appointmentEndDate' => 'appointment_end_date', 'appointmentEndTime' => 'appointment_end_time' );
		foreach ( $data as $key => $value ) {
			$row[ $map[ $key ] ] = $value;
		}
		$zone = KC_Sidecar_Time::appointment_zone( $row );
		$utc  = new DateTimeZone( 'UTC' );
		$row['appointment_start_utc'] = ( new DateTime( $row['appointment_start_date'] . ' ' . $row['appointment_start_time'], $zone ) )->setTimezone( $utc )->format( 'Y-m-d H:i:s' );
		$row['appointment_end_utc']   = ( new DateTime( $row['appointment_end_date'] . ' ' . $row['appointment_end_time'], $zone ) )->setTimezone( $utc )->format( 'Y-m-d H:i:s' );
		return $this->id;
	}
}

/**
 * Stand-in for KiviCare's slot data service: a configurable leave.
 */
class KC_Test_Slot_Service {
	/** @var string|null A local date on full-day leave. */
	public static $full_day = null;
	/** @var array|null A time-specific block: [date, start, end] local. */
	public static $block = null;

	public static function prepareSlotGenerationData( $args ) {
		if ( self::$full_day === $args['date'] ) {
			throw new Exception( 'Doctor is on leave for this date.' );
		}
		$appointments = array();
		if ( self::$block && self::$block[0] === $args['date'] ) {
			$appointments[] = array( 'appointmentStartDate' => $args['date'], 'appointmentStartTime' => self::$block[1], 'appointmentEndDate' => $args['date'], 'appointmentEndTime' => self::$block[2], 'status' => 'holiday_block' );
		}
		return array( 'appointments' => $appointments );
	}
}

/**
 * @covers KC_Sidecar_Reschedule
 */
class RescheduleTest extends KC_Test_Case {

	protected function setUp(): void {
		parent::setUp();
		KC_Test_Appointment_Model::$db      = $this->db;
		KC_Test_Appointment_Model::$updates = array();
		KC_Test_Appointment_Model::$result  = null;
		KC_Test_Slot_Service::$full_day     = null;
		KC_Test_Slot_Service::$block        = null;
		KC_Sidecar_Reschedule::$model        = 'KC_Test_Appointment_Model';
		KC_Sidecar_Reschedule::$slot_service = 'KC_Test_Slot_Service';
		KC_Test::user( 3, 'Dr Anna Schmidt', 'anna@example.com', array( 'kiviCare_doctor' ), 'America/New_York' );
		KC_Test::user( 7, 'Jane Patient', 'jane@example.com', array( 'kiviCare_patient' ) );
		$this->appointment( 36, '2026-11-25 15:00:00', 45 ); // 10:00–10:45 New York.
	}

	private function move( int $id, string $start ) {
		return KC_Sidecar_Reschedule::post( $this->request( 'POST', array( 'start' => $start ), array( 'id' => (string) $id ) ) );
	}

	public function test_move_keeps_duration_and_writes_local_columns_through_the_model(): void {
		$result = $this->move( 36, '2026-11-26T19:30:00Z' );
		$this->assertSame( array( 'ok' => true, 'appointment_id' => '36', 'start' => '2026-11-26T19:30:00Z', 'end' => '2026-11-26T20:15:00Z' ), $result->get_data() );
		$this->assertSame(
			array( array( 'appointmentStartDate' => '2026-11-26', 'appointmentStartTime' => '14:30:00', 'appointmentEndDate' => '2026-11-26', 'appointmentEndTime' => '15:15:00' ) ),
			KC_Test_Appointment_Model::$updates,
			'only the four local columns, in the appointment\'s zone'
		);
		$row = $this->db->appointments[36];
		$this->assertSame( 'keep me', $row['description'] );
		$this->assertSame( 'America/New_York', $row['appointment_timezone'] );
		$this->assertSame( array(), $this->db->locks, 'lock released' );

		$fired = array_values( array_filter( KC_Test::$fired, static fn( $f ) => 'kc_appointment_updated' === $f[0] ) );
		$this->assertCount( 1, $fired );
		$this->assertSame( 36, $fired[0][1][0] );
		$this->assertSame( array( '36' => 'kc_sidecar_rescheduled' ), KC_Sidecar_Hints::queued() );

		$this->assertCount( 1, KC_Test::$mails );
		$this->assertSame( 'jane@example.com', KC_Test::$mails[0][0] );
		$this->assertStringContainsString( 'from 2026-11-25 at 10:00 to 2026-11-26 at 14:30 (America/New_York)', KC_Test::$mails[0][2] );
	}

	public function test_move_across_dst_keeps_the_real_duration(): void {
		$this->appointment( 40, '2026-11-01 05:00:00', 60, array( 'appointment_timezone' => 'UTC' ) ); // 'UTC' = doctor's zone.
		$data = $this->move( 40, '2026-10-31T05:00:00Z' )->get_data();
		$this->assertSame( '2026-10-31T06:00:00Z', $data['end'] );
		$this->assertSame( '01:00:00', KC_Test_Appointment_Model::$updates[0]['appointmentStartTime'] );
	}

	public function test_same_start_is_a_no_op(): void {
		$data = $this->move( 36, '2026-11-25T15:00:00Z' )->get_data();
		$this->assertSame( '2026-11-25T15:45:00Z', $data['end'] );
		$this->assertSame( array(), KC_Test_Appointment_Model::$updates );
		$this->assertSame( array(), KC_Test::$mails );
	}

	public function test_refusals_change_nothing(): void {
		$this->appointment( 37, '2026-11-26 19:00:00', 30 );
		$this->appointment( 38, '2026-11-27 15:00:00', 30, array( 'status' => '4' ) );
		$this->appointment( 39, '2026-11-27 16:00:00', 30, array( 'status' => '3' ) );
		$this->appointment( 41, '2026-11-28 15:00:00', 30, array( 'status' => '0' ) );
		$this->db->busy[] = array( 'doctor_id' => 3, 'block_id' => 'gcal_1', 'start_utc' => '2026-11-29 15:00:00', 'end_utc' => '2026-11-29 16:00:00', 'name' => 'Busy' );
		$before = $this->db->appointments;

		$this->assertError( 'kc_sidecar_slot_taken', 409, $this->move( 36, '2026-11-26T18:30:00Z' ) ); // 18:30–19:15 overlaps 37.
		$this->assertError( 'kc_sidecar_slot_taken', 409, $this->move( 36, '2026-11-29T15:30:00Z' ) ); // busy block.
		$this->assertError( 'kc_sidecar_not_movable', 422, $this->move( 38, '2026-12-01T15:00:00Z' ) );
		$this->assertError( 'kc_sidecar_not_movable', 422, $this->move( 39, '2026-12-01T15:00:00Z' ) );
		$this->assertError( 'kc_sidecar_not_found', 404, $this->move( 99, '2026-12-01T15:00:00Z' ) );
		$this->assertError( 'kc_sidecar_bad_request', 400, $this->move( 36, '2026-12-01 15:00' ) );

		$this->assertSame( $before, $this->db->appointments );
		$this->assertSame( array(), KC_Test_Appointment_Model::$updates );
		$this->assertSame( array(), KC_Test::$mails );
		$this->assertSame( array(), $this->db->locks );

		$this->assertSame( 200, $this->move( 36, '2026-11-28T15:00:00Z' )->get_status(), 'a cancelled appointment does not block' );
	}

	public function test_the_appointments_own_event_does_not_block_it(): void {
		$this->db->meet[36] = array( 'appointment_id' => 36, 'url' => 'https://meet.google.com/x', 'event_id' => 'evt36', 'calendar_id' => 'c' );
		$this->db->busy[]   = array( 'doctor_id' => 3, 'block_id' => 'evt36', 'start_utc' => '2026-11-29 15:00:00', 'end_utc' => '2026-11-29 16:00:00', 'name' => 'Busy' );
		$this->assertSame( 200, $this->move( 36, '2026-11-29T15:00:00Z' )->get_status() );
	}

	public function test_kivicare_holidays_refuse(): void {
		KC_Test_Slot_Service::$full_day = '2026-12-02';
		KC_Test_Slot_Service::$block    = array( '2026-12-03', '09:00:00', '12:00:00' );
		$this->assertError( 'kc_sidecar_slot_taken', 409, $this->move( 36, '2026-12-02T15:00:00Z' ) );
		$this->assertError( 'kc_sidecar_slot_taken', 409, $this->move( 36, '2026-12-03T16:30:00Z' ) ); // 11:30 local.
		$this->assertSame( 200, $this->move( 36, '2026-12-03T17:00:00Z' )->get_status() ); // 12:00 local.
	}

	public function test_model_failure_is_500_and_no_side_effects(): void {
		KC_Test_Appointment_Model::$result = false;
		$this->assertError( 'kc_sidecar_move_failed', 500, $this->move( 36, '2026-12-01T15:00:00Z' ) );
		$this->assertSame( array(), KC_Test::$mails );
		$this->assertSame( array(), KC_Sidecar_Hints::queued() );
	}

	public function test_without_kivicare_the_route_answers_503(): void {
		KC_Sidecar_Reschedule::$model = 'KiviCare\\Does\\Not\\Exist';
		$this->assertError( 'kc_sidecar_kivicare_inactive', 503, $this->move( 36, '2026-12-01T15:00:00Z' ) );
	}
}
