<?php
/**
 * Storage: every SQL statement of the plugin, all prepared.
 *
 * The plugin owns two tables, `{prefix}kc_sidecar_busy_blocks` and `{prefix}kc_sidecar_meet_links`.
 * It only reads KiviCare's own `{prefix}kc_appointments` (writes go through KiviCare's model).
 * Times are stored as UTC `Y-m-d H:i:s`.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Data access for busy blocks, Meet links and appointment reads.
 */
class KC_Sidecar_DB {

	const SCHEMA_VERSION = '1';

	/**
	 * Table name of the busy blocks.
	 */
	public function busy_table(): string {
		global $wpdb;
		return $wpdb->prefix . 'kc_sidecar_busy_blocks';
	}

	/**
	 * Table name of the Meet links.
	 */
	public function meet_table(): string {
		global $wpdb;
		return $wpdb->prefix . 'kc_sidecar_meet_links';
	}

	/**
	 * Creates or updates the plugin's tables (dbDelta is idempotent).
	 */
	public function install(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		$charset = $wpdb->get_charset_collate();
		dbDelta(
			"CREATE TABLE {$this->busy_table()} (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  doctor_id bigint(20) unsigned NOT NULL,
  block_id varchar(64) NOT NULL DEFAULT '',
  start_utc datetime NOT NULL,
  end_utc datetime NOT NULL,
  name varchar(191) NOT NULL DEFAULT '',
  PRIMARY KEY  (id),
  KEY doctor_time (doctor_id,start_utc,end_utc)
) $charset;"
		);
		dbDelta(
			"CREATE TABLE {$this->meet_table()} (
  appointment_id bigint(20) unsigned NOT NULL,
  url varchar(2048) NOT NULL,
  event_id varchar(255) NOT NULL DEFAULT '',
  calendar_id varchar(255) NOT NULL DEFAULT '',
  created_at datetime NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY  (appointment_id)
) $charset;"
		);
	}

	/**
	 * Drops the plugin's tables (uninstall only).
	 */
	public function uninstall(): void {
		global $wpdb;
		$wpdb->query( "DROP TABLE IF EXISTS {$this->busy_table()}" ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- fixed table name.
		$wpdb->query( "DROP TABLE IF EXISTS {$this->meet_table()}" ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- fixed table name.
	}

	/**
	 * Replaces the doctor's blocks that overlap [$window_start, $window_end) with $blocks, atomically.
	 *
	 * @param int    $doctor_id    WordPress user id of the doctor.
	 * @param string $window_start UTC `Y-m-d H:i:s`.
	 * @param string $window_end   UTC `Y-m-d H:i:s`.
	 * @param array  $blocks       Each `['id','start','end','name']`, times UTC `Y-m-d H:i:s`.
	 * @return int|false Number of blocks stored, false on a database error (nothing changed).
	 */
	public function busy_replace( int $doctor_id, string $window_start, string $window_end, array $blocks ) {
		global $wpdb;
		$table = $this->busy_table();
		$wpdb->query( 'START TRANSACTION' );
		$ok = false !== $wpdb->query(
			$wpdb->prepare(
				"DELETE FROM {$table} WHERE doctor_id = %d AND start_utc < %s AND end_utc > %s", // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
				$doctor_id,
				$window_end,
				$window_start
			)
		);
		foreach ( $blocks as $block ) {
			if ( ! $ok ) {
				break;
			}
			$ok = false !== $wpdb->insert(
				$table,
				array(
					'doctor_id' => $doctor_id,
					'block_id'  => $block['id'],
					'start_utc' => $block['start'],
					'end_utc'   => $block['end'],
					'name'      => $block['name'],
				),
				array( '%d', '%s', '%s', '%s', '%s' )
			);
		}
		$wpdb->query( $ok ? 'COMMIT' : 'ROLLBACK' );
		return $ok ? count( $blocks ) : false;
	}

	/**
	 * The doctor's blocks overlapping [$start, $end), oldest first.
	 *
	 * @param int    $doctor_id Doctor (WordPress user id).
	 * @param string $start     UTC `Y-m-d H:i:s`.
	 * @param string $end       UTC `Y-m-d H:i:s`.
	 * @return array[] Rows with `block_id`, `start_utc`, `end_utc`, `name`.
	 */
	public function busy_between( int $doctor_id, string $start, string $end ): array {
		global $wpdb;
		$table = $this->busy_table();
		$rows  = $wpdb->get_results(
			$wpdb->prepare(
				"SELECT block_id, start_utc, end_utc, name FROM {$table} WHERE doctor_id = %d AND start_utc < %s AND end_utc > %s ORDER BY start_utc, id", // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
				$doctor_id,
				$end,
				$start
			),
			ARRAY_A
		);
		return is_array( $rows ) ? $rows : array();
	}

	/**
	 * The stored Meet link of an appointment.
	 *
	 * @param int $appointment_id KiviCare appointment id.
	 * @return array|null Row with `url`, `event_id`, `calendar_id`, or null.
	 */
	public function meet_get( int $appointment_id ): ?array {
		global $wpdb;
		$table = $this->meet_table();
		$row   = $wpdb->get_row(
			$wpdb->prepare( "SELECT appointment_id, url, event_id, calendar_id FROM {$table} WHERE appointment_id = %d", $appointment_id ), // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
			ARRAY_A
		);
		return is_array( $row ) ? $row : null;
	}

	/**
	 * Stores (or replaces) an appointment's Meet link.
	 *
	 * @param int    $appointment_id KiviCare appointment id.
	 * @param string $url            Join URL.
	 * @param string $event_id       Google event id.
	 * @param string $calendar_id    Google calendar id.
	 * @return bool|null True when no link was stored before, false when one was replaced, null on error.
	 */
	public function meet_put( int $appointment_id, string $url, string $event_id, string $calendar_id ): ?bool {
		global $wpdb;
		$table = $this->meet_table();
		$now   = gmdate( 'Y-m-d H:i:s' );
		// INSERT IGNORE decides "first" atomically: two racing stores cannot both be first.
		$inserted = $wpdb->query(
			$wpdb->prepare(
				"INSERT IGNORE INTO {$table} (appointment_id, url, event_id, calendar_id, created_at, updated_at) VALUES (%d, %s, %s, %s, %s, %s)", // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
				$appointment_id,
				$url,
				$event_id,
				$calendar_id,
				$now,
				$now
			)
		);
		if ( false === $inserted ) {
			return null;
		}
		if ( 1 === (int) $inserted ) {
			return true;
		}
		$updated = $wpdb->update(
			$table,
			array(
				'url'         => $url,
				'event_id'    => $event_id,
				'calendar_id' => $calendar_id,
				'updated_at'  => $now,
			),
			array( 'appointment_id' => $appointment_id ),
			array( '%s', '%s', '%s', '%s' ),
			array( '%d' )
		);
		return false === $updated ? null : false;
	}

	/**
	 * Forgets an appointment's Meet link.
	 *
	 * @param int $appointment_id KiviCare appointment id.
	 * @return bool False on a database error.
	 */
	public function meet_delete( int $appointment_id ): bool {
		global $wpdb;
		return false !== $wpdb->delete( $this->meet_table(), array( 'appointment_id' => $appointment_id ), array( '%d' ) );
	}

	/**
	 * One row of KiviCare's appointments table, or null (also when KiviCare's table is missing).
	 *
	 * @param int $appointment_id KiviCare appointment id.
	 * @return array|null Column => value.
	 */
	public function appointment( int $appointment_id ): ?array {
		global $wpdb;
		$table    = $wpdb->prefix . 'kc_appointments';
		$suppress = $wpdb->suppress_errors( true );
		$row      = $wpdb->get_row( $wpdb->prepare( "SELECT * FROM {$table} WHERE id = %d", $appointment_id ), ARRAY_A ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
		$wpdb->suppress_errors( $suppress );
		return is_array( $row ) ? $row : null;
	}

	/**
	 * Id of another non-cancelled appointment of the doctor overlapping [$start, $end), or null.
	 *
	 * @param int    $doctor_id Doctor (WordPress user id).
	 * @param string $start     UTC `Y-m-d H:i:s`.
	 * @param string $end       UTC `Y-m-d H:i:s`.
	 * @param int    $except    The appointment being moved.
	 */
	public function appointment_overlapping( int $doctor_id, string $start, string $end, int $except ): ?int {
		global $wpdb;
		$table = $wpdb->prefix . 'kc_appointments';
		$id    = $wpdb->get_var(
			$wpdb->prepare(
				"SELECT id FROM {$table} WHERE doctor_id = %d AND id <> %d AND status <> 0 AND appointment_start_utc < %s AND appointment_end_utc > %s LIMIT 1", // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared
				$doctor_id,
				$except,
				$end,
				$start
			)
		);
		return null === $id ? null : (int) $id;
	}

	/**
	 * Takes a named database lock (serialises reschedules of one doctor).
	 *
	 * @param string $name    Lock name.
	 * @param int    $timeout Seconds to wait.
	 */
	public function lock( string $name, int $timeout = 5 ): bool {
		global $wpdb;
		return '1' === (string) $wpdb->get_var( $wpdb->prepare( 'SELECT GET_LOCK(%s, %d)', $name, $timeout ) );
	}

	/**
	 * Releases a named database lock.
	 *
	 * @param string $name Lock name.
	 */
	public function unlock( string $name ): void {
		global $wpdb;
		$wpdb->get_var( $wpdb->prepare( 'SELECT RELEASE_LOCK(%s)', $name ) );
	}
}
