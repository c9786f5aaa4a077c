<?php
/**
 * Test fixture: installs the end-to-end test's WordPress from the command line, in two steps so
 * the second runs as a normal (not "installing") request:
 *
 *   php install-site.php WP_DIR install   WordPress's own wp_install()
 *   php install-site.php WP_DIR setup     fixture table and roles, users, bridge settings,
 *                                         activation; prints the user ids as JSON
 *
 * Environment: KC_TEST_HOST (host:port), KC_TEST_SIDECAR (URL), KC_TEST_SECRET.
 *
 * @package KC_Sidecar_Tests
 */

$kc_dir  = $argv[1];
$kc_step = $argv[2];

$_SERVER['HTTP_HOST']       = getenv( 'KC_TEST_HOST' );
$_SERVER['SERVER_NAME']     = '127.0.0.1';
$_SERVER['REQUEST_URI']     = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
$_SERVER['REQUEST_METHOD']  = 'GET';

if ( 'install' === $kc_step ) {
	define( 'WP_INSTALLING', true );
	require $kc_dir . '/wp-load.php';
	require_once ABSPATH . 'wp-admin/includes/upgrade.php';
	$result = wp_install( 'Riverside Clinic (test)', 'admin', 'admin@clinic.test', false, '', 'admin-pass-123' );
	echo wp_json_encode( array( 'user_id' => $result['user_id'] ) ), "\n";
	exit( 0 );
}

require $kc_dir . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

update_option( 'timezone_string', 'Europe/Paris' );
update_option( 'date_format', 'Y-m-d' );
update_option( 'time_format', 'H:i' );
update_option( 'permalink_structure', '/%postname%/' );
delete_option( 'rewrite_rules' );
kc_test_double_install();

$kc_users = array();
foreach ( array(
	'anna'  => array( 'Anna Schmidt', 'anna.schmidt@clinic.test', 'kiviCare_doctor', 'America/New_York' ),
	'marc'  => array( 'Marc Dubois', 'marc.dubois@clinic.test', 'kiviCare_doctor', '' ),
	'jane'  => array( 'Jane Patient', 'jane@patient.test', 'kiviCare_patient', '' ),
	'rita'  => array( 'Rita Desk', 'rita@clinic.test', 'kiviCare_receptionist', '' ),
) as $login => list( $name, $email, $role, $tz ) ) {
	$id = wp_insert_user(
		array(
			'user_login'   => $login,
			'user_pass'    => $login . '-pass-123',
			'user_email'   => $email,
			'display_name' => $name,
			'role'         => $role,
		)
	);
	if ( is_wp_error( $id ) ) {
		fwrite( STDERR, $id->get_error_message() . "\n" );
		exit( 1 );
	}
	if ( $tz ) {
		update_user_meta( $id, 'timezone', $tz );
	}
	$kc_users[ $login ] = $id;
}
$kc_users['admin'] = 1;

update_option( 'kc_sidecar_url', getenv( 'KC_TEST_SIDECAR' ) );
update_option( 'kc_sidecar_secret', getenv( 'KC_TEST_SECRET' ), false );
$kc_activated = activate_plugin( 'kivicare-sidecar-bridge/kivicare-sidecar-bridge.php' );
if ( is_wp_error( $kc_activated ) ) {
	fwrite( STDERR, $kc_activated->get_error_message() . "\n" );
	exit( 1 );
}
echo wp_json_encode( $kc_users ), "\n";
