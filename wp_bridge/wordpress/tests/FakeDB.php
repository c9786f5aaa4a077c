<?php
/**
 * In-memory stand-in for KC_Sidecar_DB (same methods, same semantics, no SQL).
 *
 * @package KC_Sidecar
 */

/**
 * Fake storage.
 */
class KC_Test_FakeDB extends KC_Sidecar_DB {
	/** @var array[] Busy rows: doctor_id, block_id, start_utc, end_utc, name. */
	public $busy = array();
	/** @var array[] Appointment id => Meet row. */
	public $meet = array();
	/** @var array[] Appointment id => kc_appointments row. */
	public $appointments = array();
	/** @var bool Make the next busy_replace fail. */
	public $fail = false;
	/** @var string[] Locks held. */
	public $locks = array();

	public function install(): void {}

	public function busy_replace( int $doctor_id, string $window_start, string $window_end, array $blocks ) {
		if ( $this->fail ) {
			return false;
		}
		$this->busy = array_values(
			array_filter(
				$this->busy,
				static fn( $b ) => ! ( $b['doctor_id'] === $doctor_id && $b['start_utc'] < $window_end && $b['end_utc'] > $window_start )
			)
		);
		foreach ( $blocks as $block ) {
			$this->busy[] = array( 'doctor_id' => $doctor_id, 'block_id' => $block['id'], 'start_utc' => $block['start'], 'end_utc' => $block['end'], 'name' => $block['name'] );
		}
		return count( $blocks );
	}

	public function busy_between( int $doctor_id, string $start, string $end ): array {
		$rows = array_filter( $this->busy, static fn( $b ) => $b['doctor_id'] === $doctor_id && $b['start_utc'] < $end && $b['end_utc'] > $start );
		usort( $rows, static fn( $a, $b ) => strcmp( $a['start_utc'], $b['start_utc'] ) );
		return array_values( $rows );
	}

	public function meet_get( int $appointment_id ): ?array {
		return $this->meet[ $appointment_id ] ?? null;
	}

	public function meet_put( int $appointment_id, string $url, string $event_id, string $calendar_id ): ?bool {
		$first                           = ! isset( $this->meet[ $appointment_id ] );
		$this->meet[ $appointment_id ] = array( 'appointment_id' => $appointment_id, 'url' => $url, 'event_id' => $event_id, 'calendar_id' => $calendar_id );
		return $first;
	}

	public function meet_delete( int $appointment_id ): bool {
		unset( $this->meet[ $appointment_id ] );
		return true;
	}

	public function appointment( int $appointment_id ): ?array {
		return $this->appointments[ $appointment_id ] ?? null;
	}

	public function appointment_overlapping( int $doctor_id, string $start, string $end, int $except ): ?int {
		foreach ( $this->appointments as $id => $row ) {
			if ( (int) $row['doctor_id'] === $doctor_id && $id !== $except && 0 !== (int) $row['status'] && $row['appointment_start_utc'] < $end && $row['appointment_end_utc'] > $start ) {
				return $id;
			}
		}
		return null;
	}

	public function lock( string $name, int $timeout = 5 ): bool {
		$this->locks[] = $name;
		return true;
	}

	public function unlock( string $name ): void {
		$this->locks = array_values( array_diff( $this->locks, array( $name ) ) );
	}
}
