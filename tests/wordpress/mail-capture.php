<?php
/**
 * Plugin Name: Mail capture (test fixture)
 * Description: Test-only must-use plugin: every wp_mail() call is appended as one JSON line to the
 *              file named by KC_TEST_MAIL_LOG instead of being sent. A subject containing "[fail]"
 *              makes wp_mail() return false, to test the relay's 502.
 *
 * @package KC_Sidecar_Tests
 */

add_filter(
	'pre_wp_mail',
	static function ( $short_circuit, $atts ) {
		if ( ! defined( 'KC_TEST_MAIL_LOG' ) ) {
			return $short_circuit;
		}
		$line = wp_json_encode(
			array(
				'to'      => (array) $atts['to'],
				'subject' => (string) $atts['subject'],
				'message' => (string) $atts['message'],
			)
		);
		file_put_contents( KC_TEST_MAIL_LOG, $line . "\n", FILE_APPEND | LOCK_EX ); // phpcs:ignore WordPress.WP.AlternativeFunctions.file_system_operations_file_put_contents
		return false === strpos( (string) $atts['subject'], '[fail]' );
	},
	10,
	2
);
