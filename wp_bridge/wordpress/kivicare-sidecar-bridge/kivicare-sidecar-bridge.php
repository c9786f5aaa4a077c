<?php
/**
 * Plugin Name:       KiviCare Sidecar Bridge
 * Description:       Companion of the KiviCare ↔ Google Calendar sidecar: real-time hints, busy blocks in KiviCare's slots, Meet links for doctor and patient, safe reschedules, a mail relay and a "Google Calendar" link.
 * Version:           1.0.0
 * Requires at least: 6.1
 * Requires PHP:      8.0
 * License:           GPL-2.0-or-later
 * Text Domain:       kc-sidecar
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

define( 'KC_SIDECAR_VERSION', '1.0.0' );
define( 'KC_SIDECAR_FILE', __FILE__ );

foreach ( array( 'plugin', 'db', 'time', 'signing', 'rest', 'hints', 'busy', 'meet', 'mail', 'reschedule', 'sso', 'settings' ) as $kc_sidecar_part ) {
	require_once __DIR__ . '/includes/class-' . $kc_sidecar_part . '.php';
}
unset( $kc_sidecar_part );

register_activation_hook( __FILE__, array( 'KC_Sidecar_Plugin', 'activate' ) );
KC_Sidecar_Plugin::boot();
