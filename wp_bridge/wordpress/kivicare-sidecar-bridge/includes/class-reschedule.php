<?php
/**
 * Safe reschedule: `POST /appointments/{id}/reschedule {"start":"…Z"}`.
 *
 * KiviCare's own `PUT /appointments/{id}` recomputes the end from a wrong service duration and
 * wipes the description. This route keeps the duration, writes only the four local date/time
 * columns through KiviCare's model (whose save() recomputes the UTC columns), fires
 * `kc_appointment_updated` like KiviCare does, and e-mails the patient (KiviCare sends nothing).
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * The reschedule route.
 */
final class KC_Sidecar_Reschedule {

	/** @var string KiviCare's appointment model (tests may point elsewhere). */
	public static $model = 'App\\models\\KCAppointment';

	/** @var string KiviCare's slot data service, used for its holiday rules when present. */
	public static $slot_service = 'App\\services\\KCAppointmentDataService';

	/** Statuses that never move: 3 checked out, 4 checked in. */
	const NOT_MOVABLE = array( 3, 4 );

	/**
	 * The route handler.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public static function post( $request ) {
		$model = self::$model;
		if ( ! class_exists( $model ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_kivicare_inactive', 'KiviCare is not active on this site.', 503 );
		}
		$id   = absint( $request['id'] );
		$data = KC_Sidecar_Rest::json_body( $request );
		if ( is_wp_error( $data ) ) {
			return $data;
		}
		$start = KC_Sidecar_Time::parse_utc( $data['start'] ?? null );
		if ( ! $start ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', 'start must be a UTC ISO 8601 time.', 400 );
		}
		$db  = KC_Sidecar_Plugin::db();
		$row = $db->appointment( $id );
		if ( null === $row ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_not_found', 'No such appointment.', 404 );
		}
		if ( in_array( (int) $row['status'], self::NOT_MOVABLE, true ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_not_movable', 'A checked-in or checked-out appointment cannot be moved.', 422 );
		}
		list( $old_start, $old_end ) = KC_Sidecar_Time::appointment_span( $row );
		$end = $start->modify( '+' . max( 0, $old_end->getTimestamp() - $old_start->getTimestamp() ) . ' seconds' );
		if ( $start == $old_start ) { // phpcs:ignore Universal.Operators.StrictComparisons -- same instant.
			return self::answer( $id, $row );
		}

		$lock = 'kc_sidecar_doctor_' . (int) $row['doctor_id'];
		if ( ! $db->lock( $lock ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_locked', 'Another reschedule for this doctor is running; retry.', 503 );
		}
		try {
			$refusal = self::conflict( $row, $start, $end );
			if ( $refusal ) {
				return $refusal;
			}
			$zone   = KC_Sidecar_Time::appointment_zone( $row );
			$update = array(
				'appointmentStartDate' => $start->setTimezone( $zone )->format( 'Y-m-d' ),
				'appointmentStartTime' => $start->setTimezone( $zone )->format( 'H:i:s' ),
				'appointmentEndDate'   => $end->setTimezone( $zone )->format( 'Y-m-d' ),
				'appointmentEndTime'   => $end->setTimezone( $zone )->format( 'H:i:s' ),
			);
			$appointment = $model::find( $id );
			$saved       = $appointment ? $appointment->update( $update ) : false;
		} catch ( Throwable $e ) {
			$saved = false;
		} finally {
			$db->unlock( $lock );
		}
		if ( false === $saved || is_wp_error( $saved ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_move_failed', 'KiviCare did not save the new time; nothing changed.', 500 );
		}

		$fresh = $db->appointment( $id ) ?? $row;
		do_action( 'kc_appointment_updated', $id, $update, $appointment, $request );
		KC_Sidecar_Hints::queue( KC_Sidecar_Hints::RESCHEDULED, $id );
		$old_zone = KC_Sidecar_Time::appointment_zone( $row );
		KC_Sidecar_Mail::to_patient(
			'moved',
			$fresh,
			array(
				'{previous_date}' => KC_Sidecar_Mail::date( $old_start, $old_zone ),
				'{previous_time}' => KC_Sidecar_Mail::time( $old_start, $old_zone ),
			)
		);
		return self::answer( $id, $fresh );
	}

	/**
	 * Why the new time cannot be taken (409), or null when it is free.
	 *
	 * @param array              $row   The appointment.
	 * @param DateTimeImmutable  $start New start (UTC).
	 * @param DateTimeImmutable  $end   New end (UTC).
	 */
	private static function conflict( array $row, DateTimeImmutable $start, DateTimeImmutable $end ): ?WP_Error {
		$db     = KC_Sidecar_Plugin::db();
		$id     = (int) $row['id'];
		$doctor = (int) $row['doctor_id'];
		$from   = KC_Sidecar_Time::mysql( $start );
		$to     = KC_Sidecar_Time::mysql( $end );
		if ( null !== $db->appointment_overlapping( $doctor, $from, $to, $id ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_slot_taken', 'Another appointment of this doctor overlaps the new time.', 409 );
		}
		$meet = $db->meet_get( $id );
		$own  = $meet ? (string) $meet['event_id'] : '';
		foreach ( $db->busy_between( $doctor, $from, $to ) as $block ) {
			if ( '' === $own || (string) $block['block_id'] !== $own ) {
				return KC_Sidecar_Rest::error( 'kc_sidecar_slot_taken', 'The doctor is busy in their calendar at the new time.', 409 );
			}
		}
		if ( self::on_leave( $row, $start, $end ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_slot_taken', 'The doctor is on leave (KiviCare holiday) at the new time.', 409 );
		}
		return null;
	}

	/**
	 * KiviCare's own holiday rules, asked through its slot data service when it exists: a full-day
	 * leave throws there; a time-specific one comes back as a `holiday_block` entry.
	 *
	 * @param array             $row   The appointment.
	 * @param DateTimeImmutable $start New start (UTC).
	 * @param DateTimeImmutable $end   New end (UTC).
	 */
	private static function on_leave( array $row, DateTimeImmutable $start, DateTimeImmutable $end ): bool {
		$service = self::$slot_service;
		if ( ! class_exists( $service ) || ! method_exists( $service, 'prepareSlotGenerationData' ) ) {
			return false;
		}
		$zone = KC_Sidecar_Time::doctor_zone( (int) $row['doctor_id'] );
		$day  = $start->setTimezone( $zone )->setTime( 0, 0 );
		$last = ( $end > $start ? $end->modify( '-1 second' ) : $end )->setTimezone( $zone )->format( 'Y-m-d' );
		for ( ; $day->format( 'Y-m-d' ) <= $last; $day = $day->modify( '+1 day' ) ) {
			try {
				$data = $service::prepareSlotGenerationData(
					array(
						'doctor_id'      => (int) $row['doctor_id'],
						'clinic_id'      => (int) $row['clinic_id'],
						'date'           => $day->format( 'Y-m-d' ),
						'service_id'     => array(),
						'appointment_id' => (int) $row['id'],
					)
				);
			} catch ( Throwable $e ) {
				return true; // KiviCare refuses the whole day ("Doctor is on leave").
			}
			foreach ( (array) ( $data['appointments'] ?? array() ) as $entry ) {
				$entry = (array) $entry;
				if ( 'holiday_block' !== ( $entry['status'] ?? '' ) ) {
					continue;
				}
				$block_start = new DateTimeImmutable( $entry['appointmentStartDate'] . ' ' . $entry['appointmentStartTime'], $zone );
				$block_end   = new DateTimeImmutable( $entry['appointmentEndDate'] . ' ' . $entry['appointmentEndTime'], $zone );
				if ( $start < $block_end && $end > $block_start ) {
					return true;
				}
			}
		}
		return false;
	}

	/**
	 * `{"ok":true,"appointment_id":"36","start":"…Z","end":"…Z"}`.
	 *
	 * @param int   $id  Appointment id.
	 * @param array $row The appointment row.
	 */
	private static function answer( int $id, array $row ): WP_REST_Response {
		list( $start, $end ) = KC_Sidecar_Time::appointment_span( $row );
		return KC_Sidecar_Rest::ok(
			array(
				'appointment_id' => (string) $id,
				'start'          => KC_Sidecar_Time::iso( $start ),
				'end'            => KC_Sidecar_Time::iso( $end ),
			)
		);
	}
}
