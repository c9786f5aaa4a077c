<?php
/**
 * Bootstrap: wires every part to WordPress and holds the shared settings.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * The plugin's entry point and settings accessor.
 */
final class KC_Sidecar_Plugin {

	/** Option names (PROTOCOL.md fixes `kc_sidecar_secret`). */
	const OPT_URL        = 'kc_sidecar_url';
	const OPT_SECRET     = 'kc_sidecar_secret';
	const OPT_TEMPLATES  = 'kc_sidecar_templates';
	const OPT_DB_VERSION = 'kc_sidecar_db_version';

	/** The KiviCare roles that are clinic staff (may use "Google Calendar"). */
	const STAFF_ROLES = array( 'administrator', 'kiviCare_clinic_admin', 'kiviCare_doctor', 'kiviCare_receptionist' );

	/** @var KC_Sidecar_DB|null Storage; tests swap in a fake. */
	private static $db = null;

	/**
	 * Registers every hook. Called once from the main plugin file.
	 */
	public static function boot(): void {
		add_action( 'plugins_loaded', array( __CLASS__, 'maybe_upgrade' ) );
		KC_Sidecar_Rest::register();
		KC_Sidecar_Hints::register();
		KC_Sidecar_Busy::register();
		KC_Sidecar_Meet::register();
		KC_Sidecar_SSO::register();
		KC_Sidecar_Settings::register();
	}

	/**
	 * Activation: create or update the plugin's own tables.
	 */
	public static function activate(): void {
		self::db()->install();
		update_option( self::OPT_DB_VERSION, KC_Sidecar_DB::SCHEMA_VERSION, true );
	}

	/**
	 * Creates the tables after an update that changed them (activation hooks do not run on update).
	 */
	public static function maybe_upgrade(): void {
		if ( get_option( self::OPT_DB_VERSION ) !== KC_Sidecar_DB::SCHEMA_VERSION ) {
			self::activate();
		}
	}

	/**
	 * The storage object.
	 */
	public static function db(): KC_Sidecar_DB {
		if ( null === self::$db ) {
			self::$db = new KC_Sidecar_DB();
		}
		return self::$db;
	}

	/**
	 * Replaces the storage (unit tests only).
	 *
	 * @param KC_Sidecar_DB|null $db Storage, or null for the real one.
	 */
	public static function set_db( ?KC_Sidecar_DB $db ): void {
		self::$db = $db;
	}

	/**
	 * The sidecar's base URL without a trailing slash ('' when not set).
	 */
	public static function sidecar_url(): string {
		return untrailingslashit( (string) get_option( self::OPT_URL, '' ) );
	}

	/**
	 * The shared secret ('' when not set). Never print it.
	 */
	public static function secret(): string {
		return (string) get_option( self::OPT_SECRET, '' );
	}

	/**
	 * Whether both the URL and the secret are set.
	 */
	public static function configured(): bool {
		return '' !== self::sidecar_url() && '' !== self::secret();
	}

	/**
	 * KiviCare's version when it is active, else null.
	 */
	public static function kivicare_version(): ?string {
		return defined( 'KIVI_CARE_VERSION' ) ? (string) constant( 'KIVI_CARE_VERSION' ) : null;
	}
}
