<?php
/**
 * Uninstall: removes this plugin's options, transients and its own two tables, nothing else.
 *
 * @package KC_Sidecar
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

/**
 * Cleans one site.
 */
function kc_sidecar_uninstall_site(): void {
	global $wpdb;
	foreach ( array( 'kc_sidecar_url', 'kc_sidecar_secret', 'kc_sidecar_templates', 'kc_sidecar_db_version' ) as $option ) {
		delete_option( $option );
	}
	$wpdb->query( $wpdb->prepare( "DELETE FROM {$wpdb->options} WHERE option_name LIKE %s OR option_name LIKE %s", $wpdb->esc_like( '_transient_kc_sidecar_' ) . '%', $wpdb->esc_like( '_transient_timeout_kc_sidecar_' ) . '%' ) );
	$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}kc_sidecar_busy_blocks" ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- fixed table name.
	$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}kc_sidecar_meet_links" ); // phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- fixed table name.
}

if ( is_multisite() ) {
	foreach ( get_sites( array( 'fields' => 'ids', 'number' => 0 ) ) as $kc_sidecar_site ) {
		switch_to_blog( $kc_sidecar_site );
		kc_sidecar_uninstall_site();
		restore_current_blog();
	}
} else {
	kc_sidecar_uninstall_site();
}
