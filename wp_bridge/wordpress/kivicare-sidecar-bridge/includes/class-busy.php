<?php
/**
 * Busy blocks: `PUT /busy` stores the sidecar's Google busy times (UTC); KiviCare's slot filters
 * `kc_external_busy_slots` (month view) and `kc_external_busy_slots_single` (one day, booking)
 * read them back in the doctor's local time, so those slots cannot be booked (409) and disappear
 * from the booking widget. Nothing is cancelled.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * The busy route and filters.
 */
final class KC_Sidecar_Busy {

	/** Largest push accepted at once. */
	const MAX_BLOCKS = 5000;

	/**
	 * Hooks KiviCare's filters.
	 */
	public static function register(): void {
		add_filter( 'kc_external_busy_slots', array( __CLASS__, 'filter_range' ), 10, 4 );
		add_filter( 'kc_external_busy_slots_single', array( __CLASS__, 'filter_single' ), 10, 3 );
	}

	/**
	 * `PUT /busy {"doctor_id","window_start","window_end","blocks":[{"id","start","end","name"}]}`.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public static function put( $request ) {
		$data = KC_Sidecar_Rest::json_body( $request );
		if ( is_wp_error( $data ) ) {
			return $data;
		}
		$doctor = isset( $data['doctor_id'] ) && is_numeric( $data['doctor_id'] ) ? (int) $data['doctor_id'] : 0;
		$from   = KC_Sidecar_Time::parse_utc( $data['window_start'] ?? null );
		$to     = KC_Sidecar_Time::parse_utc( $data['window_end'] ?? null );
		if ( $doctor <= 0 || ! $from || ! $to || $from >= $to || ! isset( $data['blocks'] ) || ! is_array( $data['blocks'] ) ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', 'Need doctor_id, window_start < window_end (UTC ISO 8601) and a blocks list.', 400 );
		}
		if ( count( $data['blocks'] ) > self::MAX_BLOCKS ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', 'Too many blocks in one push.', 400 );
		}
		$blocks = array();
		foreach ( array_values( $data['blocks'] ) as $i => $block ) {
			$clean = self::clean_block( $block );
			if ( null === $clean ) {
				return KC_Sidecar_Rest::error( 'kc_sidecar_bad_request', sprintf( 'Block %d needs an id of at most 64 characters and start < end (UTC ISO 8601).', $i ), 400 );
			}
			$blocks[] = $clean;
		}
		$stored = KC_Sidecar_Plugin::db()->busy_replace( $doctor, KC_Sidecar_Time::mysql( $from ), KC_Sidecar_Time::mysql( $to ), $blocks );
		if ( false === $stored ) {
			return KC_Sidecar_Rest::error( 'kc_sidecar_storage_failed', 'The busy blocks could not be stored; nothing changed.', 500 );
		}
		return KC_Sidecar_Rest::ok( array( 'stored' => $stored ) );
	}

	/**
	 * Validates one pushed block.
	 *
	 * @param mixed $block Decoded JSON.
	 * @return array|null `['id','start','end','name']` (UTC database times) or null when invalid.
	 */
	private static function clean_block( $block ): ?array {
		if ( ! is_array( $block ) || ! isset( $block['id'] ) || ! is_scalar( $block['id'] ) ) {
			return null;
		}
		$id    = (string) $block['id'];
		$start = KC_Sidecar_Time::parse_utc( $block['start'] ?? null );
		$end   = KC_Sidecar_Time::parse_utc( $block['end'] ?? null );
		if ( '' === $id || strlen( $id ) > 64 || ! $start || ! $end || $start >= $end ) {
			return null;
		}
		$name = isset( $block['name'] ) && is_string( $block['name'] ) ? sanitize_text_field( $block['name'] ) : '';
		return array(
			'id'    => $id,
			'start' => KC_Sidecar_Time::mysql( $start ),
			'end'   => KC_Sidecar_Time::mysql( $end ),
			'name'  => '' === $name ? 'Busy' : mb_substr( $name, 0, 191 ),
		);
	}

	/**
	 * `kc_external_busy_slots($slots, $doctorId, $localStartDate, $localEndDate)`.
	 *
	 * @param mixed  $slots      What other filters returned.
	 * @param mixed  $doctor_id  Doctor (WordPress user id).
	 * @param string $start_date First local date, `Y-m-d`.
	 * @param string $end_date   Last local date, `Y-m-d`.
	 * @return array
	 */
	public static function filter_range( $slots, $doctor_id, $start_date, $end_date ): array {
		return self::merge( $slots, self::local_blocks( (int) $doctor_id, (string) $start_date, (string) $end_date ) );
	}

	/**
	 * `kc_external_busy_slots_single($slots, $doctorId, $date)`.
	 *
	 * @param mixed  $slots     What other filters returned.
	 * @param mixed  $doctor_id Doctor (WordPress user id).
	 * @param string $date      Local date, `Y-m-d`.
	 * @return array
	 */
	public static function filter_single( $slots, $doctor_id, $date ): array {
		return self::merge( $slots, self::local_blocks( (int) $doctor_id, (string) $date, (string) $date ) );
	}

	/**
	 * The doctor's blocks on the local dates [$first, $last], in KiviCare's shape.
	 *
	 * @param int    $doctor_id Doctor.
	 * @param string $first     First local date.
	 * @param string $last      Last local date.
	 * @return array[]
	 */
	public static function local_blocks( int $doctor_id, string $first, string $last ): array {
		if ( $doctor_id <= 0 || ! self::is_date( $first ) || ! self::is_date( $last ) || $first > $last ) {
			return array();
		}
		$zone = KC_Sidecar_Time::doctor_zone( $doctor_id );
		$from = new DateTimeImmutable( $first . ' 00:00:00', $zone );
		$to   = ( new DateTimeImmutable( $last . ' 00:00:00', $zone ) )->modify( '+1 day' );
		$rows = KC_Sidecar_Plugin::db()->busy_between( $doctor_id, KC_Sidecar_Time::mysql( $from ), KC_Sidecar_Time::mysql( $to ) );
		return self::to_local( $rows, $zone, $first, $last );
	}

	/**
	 * Converts UTC rows to doctor-local `['start','end','name']`, split at local midnight.
	 *
	 * KiviCare's month view files each block under `substr($start, 0, 10)` only, so a block that
	 * crosses midnight is cut into one piece per local day; only pieces on [$first, $last] are kept.
	 *
	 * @param array[]      $rows  `start_utc`, `end_utc`, `name` (UTC database times).
	 * @param DateTimeZone $zone  Doctor's timezone.
	 * @param string       $first First local date kept.
	 * @param string       $last  Last local date kept.
	 * @return array[]
	 */
	public static function to_local( array $rows, DateTimeZone $zone, string $first, string $last ): array {
		$out = array();
		foreach ( $rows as $row ) {
			$start = KC_Sidecar_Time::from_mysql( $row['start_utc'] )->setTimezone( $zone );
			$end   = KC_Sidecar_Time::from_mysql( $row['end_utc'] )->setTimezone( $zone );
			while ( $start < $end ) {
				$midnight = $start->setTime( 0, 0 )->modify( '+1 day' );
				$piece    = $end < $midnight ? $end : $midnight;
				$day      = $start->format( 'Y-m-d' );
				if ( $day >= $first && $day <= $last ) {
					$out[] = array(
						'start' => $start->format( 'Y-m-d H:i:s' ),
						'end'   => $piece->format( 'Y-m-d H:i:s' ),
						'name'  => (string) $row['name'],
					);
				}
				$start = $piece;
			}
		}
		return $out;
	}

	/**
	 * Appends our blocks to what other filters returned.
	 *
	 * @param mixed   $slots Other filters' result.
	 * @param array[] $ours  Our blocks.
	 */
	private static function merge( $slots, array $ours ): array {
		return array_merge( is_array( $slots ) ? array_values( $slots ) : array(), $ours );
	}

	/**
	 * Whether the text is a real `Y-m-d` date.
	 *
	 * @param string $date Text.
	 */
	private static function is_date( string $date ): bool {
		$parsed = DateTimeImmutable::createFromFormat( '!Y-m-d', $date );
		return $parsed && $parsed->format( 'Y-m-d' ) === $date;
	}
}
