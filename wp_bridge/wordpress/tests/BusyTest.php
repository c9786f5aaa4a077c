<?php
/**
 * Busy blocks: UTC → doctor-local conversion (DST included), midnight splitting, the filters and
 * the PUT route's replace semantics.
 *
 * @package KC_Sidecar
 */

/**
 * @covers KC_Sidecar_Busy
 */
class BusyTest extends KC_Test_Case {

	private function rows( array $pairs ): array {
		return array_map( static fn( $p ) => array( 'start_utc' => $p[0], 'end_utc' => $p[1], 'name' => $p[2] ?? 'Busy' ), $pairs );
	}

	private function put( array $body ) {
		return KC_Sidecar_Busy::put( $this->request( 'PUT', $body ) );
	}

	public function test_utc_to_new_york_standard_and_daylight_time(): void {
		$ny  = new DateTimeZone( 'America/New_York' );
		$out = KC_Sidecar_Busy::to_local( $this->rows( array( array( '2026-11-25 15:00:00', '2026-11-25 16:00:00' ), array( '2026-07-01 14:00:00', '2026-07-01 15:30:00', 'Dentist' ) ) ), $ny, '2026-01-01', '2026-12-31' );
		$this->assertSame(
			array(
				array( 'start' => '2026-11-25 10:00:00', 'end' => '2026-11-25 11:00:00', 'name' => 'Busy' ),
				array( 'start' => '2026-07-01 10:00:00', 'end' => '2026-07-01 11:30:00', 'name' => 'Dentist' ),
			),
			$out
		);
	}

	public function test_block_across_the_spring_forward_gap_keeps_its_real_length(): void {
		// Paris jumps 02:00 CET → 03:00 CEST on 2026-03-29: 00:30Z–02:30Z is 01:30 → 04:30 local.
		$out = KC_Sidecar_Busy::to_local( $this->rows( array( array( '2026-03-29 00:30:00', '2026-03-29 02:30:00' ) ) ), new DateTimeZone( 'Europe/Paris' ), '2026-03-29', '2026-03-29' );
		$this->assertSame( array( array( 'start' => '2026-03-29 01:30:00', 'end' => '2026-03-29 04:30:00', 'name' => 'Busy' ) ), $out );
		// KiviCare re-reads these strings in the doctor's zone: the instants come back exactly.
		$zone = new DateTimeZone( 'Europe/Paris' );
		$this->assertSame( '2026-03-29T00:30:00Z', KC_Sidecar_Time::iso( new DateTimeImmutable( $out[0]['start'], $zone ) ) );
		$this->assertSame( '2026-03-29T02:30:00Z', KC_Sidecar_Time::iso( new DateTimeImmutable( $out[0]['end'], $zone ) ) );
	}

	public function test_block_across_the_fall_back_hour(): void {
		// New York repeats 01:00–02:00 on 2026-11-01: 05:30Z (01:30 EDT) → 07:00Z (02:00 EST).
		$out = KC_Sidecar_Busy::to_local( $this->rows( array( array( '2026-11-01 05:30:00', '2026-11-01 07:00:00' ) ) ), new DateTimeZone( 'America/New_York' ), '2026-11-01', '2026-11-01' );
		$this->assertSame( array( array( 'start' => '2026-11-01 01:30:00', 'end' => '2026-11-01 02:00:00', 'name' => 'Busy' ) ), $out );
	}

	public function test_blocks_are_split_at_local_midnight_and_clipped_to_the_asked_days(): void {
		// 2026-11-25 03:00Z–06:00Z is 22:00 on the 24th to 01:00 on the 25th in New York.
		$rows = $this->rows( array( array( '2026-11-25 03:00:00', '2026-11-25 06:00:00' ) ) );
		$ny   = new DateTimeZone( 'America/New_York' );
		$this->assertSame(
			array(
				array( 'start' => '2026-11-24 22:00:00', 'end' => '2026-11-25 00:00:00', 'name' => 'Busy' ),
				array( 'start' => '2026-11-25 00:00:00', 'end' => '2026-11-25 01:00:00', 'name' => 'Busy' ),
			),
			KC_Sidecar_Busy::to_local( $rows, $ny, '2026-11-24', '2026-11-25' )
		);
		$this->assertSame( array( array( 'start' => '2026-11-25 00:00:00', 'end' => '2026-11-25 01:00:00', 'name' => 'Busy' ) ), KC_Sidecar_Busy::to_local( $rows, $ny, '2026-11-25', '2026-11-25' ) );
	}

	public function test_put_then_filters_return_local_time_merged_with_other_filters(): void {
		KC_Test::user( 3, 'Anna Schmidt', 'anna@example.com', array( 'kiviCare_doctor' ), 'America/New_York' );
		$result = $this->put(
			array(
				'doctor_id'    => 3,
				'window_start' => '2026-11-25T00:00:00Z',
				'window_end'   => '2026-11-27T00:00:00Z',
				'blocks'       => array(
					array( 'id' => 'evt_1', 'start' => '2026-11-25T14:00:00Z', 'end' => '2026-11-25T15:00:00Z', 'name' => 'Team <b>meeting</b>' ),
					array( 'id' => 'evt_2', 'start' => '2026-11-26T09:00:00+01:00', 'end' => '2026-11-26T09:30:00+01:00' ),
				),
			)
		);
		$this->assertSame( array( 'ok' => true, 'stored' => 2 ), $result->get_data() );

		$other  = array( array( 'start' => '2026-11-25 08:00:00', 'end' => '2026-11-25 08:30:00', 'name' => 'Other' ) );
		$single = apply_filters( 'kc_external_busy_slots_single', $other, 3, '2026-11-25' );
		$this->assertSame( array( $other[0], array( 'start' => '2026-11-25 09:00:00', 'end' => '2026-11-25 10:00:00', 'name' => 'Team meeting' ) ), $single );

		$month = apply_filters( 'kc_external_busy_slots', array(), 3, '2026-11-01', '2026-11-30' );
		$this->assertSame(
			array(
				array( 'start' => '2026-11-25 09:00:00', 'end' => '2026-11-25 10:00:00', 'name' => 'Team meeting' ),
				array( 'start' => '2026-11-26 03:00:00', 'end' => '2026-11-26 03:30:00', 'name' => 'Busy' ),
			),
			$month
		);
		$this->assertSame( array(), apply_filters( 'kc_external_busy_slots_single', array(), 4, '2026-11-25' ), 'other doctors are untouched' );
	}

	public function test_doctor_without_timezone_uses_the_site_timezone(): void {
		$this->db->busy[] = array( 'doctor_id' => 5, 'block_id' => 'x', 'start_utc' => '2026-11-25 14:00:00', 'end_utc' => '2026-11-25 15:00:00', 'name' => 'Busy' );
		$this->assertSame( array( array( 'start' => '2026-11-25 15:00:00', 'end' => '2026-11-25 16:00:00', 'name' => 'Busy' ) ), KC_Sidecar_Busy::filter_single( array(), 5, '2026-11-25' ) );
	}

	public function test_put_replaces_only_blocks_overlapping_the_window(): void {
		$this->put( array( 'doctor_id' => 3, 'window_start' => '2026-11-01T00:00:00Z', 'window_end' => '2026-12-01T00:00:00Z', 'blocks' => array(
			array( 'id' => 'old_in', 'start' => '2026-11-10T10:00:00Z', 'end' => '2026-11-10T11:00:00Z' ),
			array( 'id' => 'old_out', 'start' => '2026-11-20T10:00:00Z', 'end' => '2026-11-20T11:00:00Z' ),
		) ) );
		$result = $this->put( array( 'doctor_id' => 3, 'window_start' => '2026-11-09T00:00:00Z', 'window_end' => '2026-11-12T00:00:00Z', 'blocks' => array(
			array( 'id' => 'new', 'start' => '2026-11-11T10:00:00Z', 'end' => '2026-11-11T11:00:00Z' ),
		) ) );
		$this->assertSame( 1, $result->get_data()['stored'] );
		$this->assertSame( array( 'old_out', 'new' ), array_column( $this->db->busy, 'block_id' ) );

		$this->put( array( 'doctor_id' => 3, 'window_start' => '2026-11-01T00:00:00Z', 'window_end' => '2026-12-01T00:00:00Z', 'blocks' => array() ) );
		$this->assertSame( array(), $this->db->busy, 'an empty push clears the window' );
	}

	public function test_put_rejects_bad_bodies_and_changes_nothing(): void {
		$this->db->busy[] = array( 'doctor_id' => 3, 'block_id' => 'keep', 'start_utc' => '2026-11-25 14:00:00', 'end_utc' => '2026-11-25 15:00:00', 'name' => 'Busy' );
		$window = array( 'doctor_id' => 3, 'window_start' => '2026-11-25T00:00:00Z', 'window_end' => '2026-11-26T00:00:00Z' );
		$bad    = array(
			'not json'        => 'nope',
			'no doctor'       => array( 'window_start' => '2026-11-25T00:00:00Z', 'window_end' => '2026-11-26T00:00:00Z', 'blocks' => array() ),
			'window reversed' => array( 'doctor_id' => 3, 'window_start' => '2026-11-26T00:00:00Z', 'window_end' => '2026-11-25T00:00:00Z', 'blocks' => array() ),
			'no offset'       => array( 'doctor_id' => 3, 'window_start' => '2026-11-25T00:00:00', 'window_end' => '2026-11-26T00:00:00Z', 'blocks' => array() ),
			'no blocks'       => $window,
			'block reversed'  => $window + array( 'blocks' => array( array( 'id' => 'a', 'start' => '2026-11-25T15:00:00Z', 'end' => '2026-11-25T14:00:00Z' ) ) ),
			'block no id'     => $window + array( 'blocks' => array( array( 'start' => '2026-11-25T14:00:00Z', 'end' => '2026-11-25T15:00:00Z' ) ) ),
			'id too long'     => $window + array( 'blocks' => array( array( 'id' => str_repeat( 'x', 65 ), 'start' => '2026-11-25T14:00:00Z', 'end' => '2026-11-25T15:00:00Z' ) ) ),
			'impossible date' => $window + array( 'blocks' => array( array( 'id' => 'a', 'start' => '2026-02-30T14:00:00Z', 'end' => '2026-03-01T15:00:00Z' ) ) ),
		);
		foreach ( $bad as $name => $body ) {
			$this->assertError( 'kc_sidecar_bad_request', 400, KC_Sidecar_Busy::put( $this->request( 'PUT', $body ) ) );
		}
		$this->db->fail = true;
		$this->assertError( 'kc_sidecar_storage_failed', 500, $this->put( $window + array( 'blocks' => array() ) ) );
		$this->assertSame( array( 'keep' ), array_column( $this->db->busy, 'block_id' ) );
	}

	public function test_filters_ignore_garbage_arguments(): void {
		$this->assertSame( array(), KC_Sidecar_Busy::filter_single( null, 0, '2026-11-25' ) );
		$this->assertSame( array(), KC_Sidecar_Busy::filter_single( array(), 3, '25/11/2026' ) );
		$this->assertSame( array(), KC_Sidecar_Busy::filter_range( 'x', 3, '2026-11-30', '2026-11-01' ) );
	}
}
