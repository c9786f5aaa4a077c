<?php
/**
 * Time helpers: UTC parsing and formatting, and the timezones KiviCare uses.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Pure time functions (no database).
 */
final class KC_Sidecar_Time {

	/**
	 * Parses an ISO 8601 time with an explicit offset (`…Z` or `…+02:00`) into UTC.
	 *
	 * @param mixed $value The text.
	 * @return DateTimeImmutable|null UTC time, or null when malformed or without an offset.
	 */
	public static function parse_utc( $value ): ?DateTimeImmutable {
		if ( ! is_string( $value ) || ! preg_match( '/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/', $value ) ) {
			return null;
		}
		try {
			$time = new DateTimeImmutable( $value );
		} catch ( Exception $e ) {
			return null;
		}
		$errors = DateTimeImmutable::getLastErrors();
		if ( is_array( $errors ) && ( $errors['warning_count'] > 0 || $errors['error_count'] > 0 ) ) {
			return null; // e.g. 2026-02-30, which PHP would silently roll over.
		}
		return $time->setTimezone( new DateTimeZone( 'UTC' ) );
	}

	/**
	 * `2026-11-25T15:00:00Z`.
	 *
	 * @param DateTimeInterface $time Any time.
	 */
	public static function iso( DateTimeInterface $time ): string {
		return self::in_utc( $time )->format( 'Y-m-d\TH:i:s\Z' );
	}

	/**
	 * `2026-11-25 15:00:00` in UTC (database form).
	 *
	 * @param DateTimeInterface $time Any time.
	 */
	public static function mysql( DateTimeInterface $time ): string {
		return self::in_utc( $time )->format( 'Y-m-d H:i:s' );
	}

	/**
	 * Reads a UTC database value.
	 *
	 * @param string $value `Y-m-d H:i:s`.
	 */
	public static function from_mysql( string $value ): DateTimeImmutable {
		return new DateTimeImmutable( $value, new DateTimeZone( 'UTC' ) );
	}

	/**
	 * A timezone from an IANA name, `±HH:MM`, or KiviCare's `UTC±H[.5|:MM]` form; null when unknown.
	 *
	 * @param mixed $name Timezone text.
	 */
	public static function zone( $name ): ?DateTimeZone {
		if ( ! is_string( $name ) || '' === $name ) {
			return null;
		}
		if ( preg_match( '/^UTC([+-])(\d{1,2})(?:\.(\d+)|:(\d{2}))?$/i', $name, $m ) ) {
			$minutes = isset( $m[4] ) && '' !== $m[4] ? (int) $m[4] : ( isset( $m[3] ) && '' !== $m[3] ? (int) round( (float) ( '0.' . $m[3] ) * 60 ) : 0 );
			$name    = sprintf( '%s%02d:%02d', $m[1], (int) $m[2], $minutes );
		}
		if ( in_array( $name, timezone_identifiers_list( DateTimeZone::ALL_WITH_BC ), true ) || preg_match( '/^[+-]\d{2}:\d{2}$/', $name ) ) {
			return new DateTimeZone( $name );
		}
		return null;
	}

	/**
	 * The doctor's timezone as KiviCare sees it: user-meta `timezone` if valid, else the site's.
	 *
	 * @param int $doctor_id WordPress user id.
	 */
	public static function doctor_zone( int $doctor_id ): DateTimeZone {
		if ( function_exists( 'kcGetDoctorTimezone' ) ) {
			$zone = self::zone( kcGetDoctorTimezone( $doctor_id ) );
			if ( $zone ) {
				return $zone;
			}
		}
		$meta = get_user_meta( $doctor_id, 'timezone', true );
		if ( is_string( $meta ) && in_array( $meta, timezone_identifiers_list( DateTimeZone::ALL_WITH_BC ), true ) ) {
			return new DateTimeZone( $meta );
		}
		return wp_timezone();
	}

	/**
	 * The zone an appointment's local columns are in, exactly as KiviCare's model decides when it saves:
	 * `appointment_timezone`, unless empty or `UTC` (the schema default), then the doctor's.
	 *
	 * @param array $row A `kc_appointments` row.
	 */
	public static function appointment_zone( array $row ): DateTimeZone {
		$name = isset( $row['appointment_timezone'] ) ? (string) $row['appointment_timezone'] : '';
		if ( '' === $name || 'UTC' === $name ) {
			return self::doctor_zone( (int) ( $row['doctor_id'] ?? 0 ) );
		}
		return self::zone( $name ) ?? new DateTimeZone( 'UTC' );
	}

	/**
	 * Start and end of an appointment in UTC: the UTC columns, else the local columns in its zone.
	 *
	 * @param array $row A `kc_appointments` row.
	 * @return DateTimeImmutable[] `[start, end]`.
	 */
	public static function appointment_span( array $row ): array {
		if ( ! empty( $row['appointment_start_utc'] ) && ! empty( $row['appointment_end_utc'] ) ) {
			return array( self::from_mysql( $row['appointment_start_utc'] ), self::from_mysql( $row['appointment_end_utc'] ) );
		}
		$zone  = self::appointment_zone( $row );
		$start = new DateTimeImmutable( $row['appointment_start_date'] . ' ' . $row['appointment_start_time'], $zone );
		$end   = new DateTimeImmutable( $row['appointment_end_date'] . ' ' . $row['appointment_end_time'], $zone );
		return array( self::in_utc( $start ), self::in_utc( $end ) );
	}

	/**
	 * The same instant in UTC.
	 *
	 * @param DateTimeInterface $time Any time.
	 */
	private static function in_utc( DateTimeInterface $time ): DateTimeImmutable {
		return DateTimeImmutable::createFromInterface( $time )->setTimezone( new DateTimeZone( 'UTC' ) );
	}
}
