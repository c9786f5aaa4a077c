<?php
/**
 * Stand-in for WordPress's socket transport class name (unit tests run without WordPress).
 *
 * @package KC_Sidecar
 */

/**
 * Claims every capability, like the real transport on a machine with sockets and OpenSSL.
 */
class Requests_Transport_fsockopen {
	public static function test( $capabilities = array() ) {
		return true;
	}
}
