<?php
/**
 * Settings → KiviCare Sidecar: sidecar URL, shared secret (write-only, shown masked), the two
 * patient e-mail templates with their switches, and a "Test connection" button that sends the
 * signed ping (PROTOCOL.md, "Ping") and shows the sidecar's answer.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * The admin settings screen.
 */
final class KC_Sidecar_Settings {

	const PAGE = 'kc-sidecar';
	const CAP  = 'manage_options';

	/**
	 * Hooks the page and its two form handlers.
	 */
	public static function register(): void {
		add_action( 'admin_menu', array( __CLASS__, 'menu' ) );
		add_action( 'admin_post_kc_sidecar_save', array( __CLASS__, 'save' ) );
		add_action( 'admin_post_kc_sidecar_test', array( __CLASS__, 'test' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( KC_SIDECAR_FILE ), array( __CLASS__, 'action_links' ) );
	}

	/**
	 * Adds the page under Settings.
	 */
	public static function menu(): void {
		add_options_page( __( 'KiviCare Sidecar', 'kc-sidecar' ), __( 'KiviCare Sidecar', 'kc-sidecar' ), self::CAP, self::PAGE, array( __CLASS__, 'render' ) );
	}

	/**
	 * "Settings" link on the Plugins screen.
	 *
	 * @param array $links Existing links.
	 */
	public static function action_links( $links ): array {
		$links   = is_array( $links ) ? $links : array();
		$links[] = '<a href="' . esc_url( self::page_url() ) . '">' . esc_html__( 'Settings', 'kc-sidecar' ) . '</a>';
		return $links;
	}

	/**
	 * URL of the page.
	 *
	 * @param array $args Extra query arguments.
	 */
	public static function page_url( array $args = array() ): string {
		return add_query_arg( array( 'page' => self::PAGE ) + $args, admin_url( 'options-general.php' ) );
	}

	/**
	 * The secret as shown: never more than its last four characters.
	 *
	 * @param string $secret The secret.
	 */
	public static function mask( string $secret ): string {
		if ( '' === $secret ) {
			return '';
		}
		return str_repeat( '•', 8 ) . ( strlen( $secret ) >= 16 ? substr( $secret, -4 ) : '' );
	}

	/**
	 * Renders the page.
	 */
	public static function render(): void {
		if ( ! current_user_can( self::CAP ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'kc-sidecar' ), '', array( 'response' => 403 ) );
		}
		$secret    = KC_Sidecar_Plugin::secret();
		$templates = KC_Sidecar_Mail::templates();
		$labels    = array(
			'meet'  => __( 'Patient e-mail: video consultation link available', 'kc-sidecar' ),
			'moved' => __( 'Patient e-mail: appointment moved', 'kc-sidecar' ),
		);
		echo '<div class="wrap"><h1>' . esc_html__( 'KiviCare Sidecar', 'kc-sidecar' ) . '</h1>';
		self::notices();
		echo '<p>' . esc_html(
			sprintf(
				/* translators: 1: plugin version, 2: KiviCare version or "not active". */
				__( 'Bridge %1$s · KiviCare %2$s', 'kc-sidecar' ),
				KC_SIDECAR_VERSION,
				KC_Sidecar_Plugin::kivicare_version() ?? __( 'not active', 'kc-sidecar' )
			)
		) . '</p>';

		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
		echo '<input type="hidden" name="action" value="kc_sidecar_save">';
		wp_nonce_field( 'kc_sidecar_save' );
		echo '<table class="form-table" role="presentation">';
		echo '<tr><th scope="row"><label for="kc_sidecar_url">' . esc_html__( 'Sidecar URL', 'kc-sidecar' ) . '</label></th><td>';
		echo '<input type="url" class="regular-text" id="kc_sidecar_url" name="kc_sidecar_url" value="' . esc_attr( KC_Sidecar_Plugin::sidecar_url() ) . '" placeholder="https://sidecar.example.com">';
		echo '</td></tr>';
		echo '<tr><th scope="row"><label for="kc_sidecar_secret">' . esc_html__( 'Shared secret', 'kc-sidecar' ) . '</label></th><td>';
		echo '<input type="password" class="regular-text" id="kc_sidecar_secret" name="kc_sidecar_secret" value="" autocomplete="new-password">';
		echo '<p class="description">' . ( '' === $secret
			? esc_html__( 'Not set. Copy it from the sidecar\'s settings page.', 'kc-sidecar' )
			: esc_html( sprintf( /* translators: %s: masked secret */ __( 'Stored: %s. Leave empty to keep it.', 'kc-sidecar' ), self::mask( $secret ) ) )
		) . '</p>';
		if ( '' !== $secret ) {
			echo '<label><input type="checkbox" name="kc_sidecar_forget_secret" value="1"> ' . esc_html__( 'Remove the stored secret', 'kc-sidecar' ) . '</label>';
		}
		echo '</td></tr>';
		foreach ( $templates as $key => $template ) {
			echo '<tr><th scope="row">' . esc_html( $labels[ $key ] ) . '</th><td>';
			echo '<label><input type="checkbox" name="kc_sidecar_tpl[' . esc_attr( $key ) . '][enabled]" value="1"' . checked( ! empty( $template['enabled'] ), true, false ) . '> ' . esc_html__( 'Send this e-mail', 'kc-sidecar' ) . '</label><br>';
			echo '<input type="text" class="large-text" name="kc_sidecar_tpl[' . esc_attr( $key ) . '][subject]" value="' . esc_attr( $template['subject'] ) . '" aria-label="' . esc_attr__( 'Subject', 'kc-sidecar' ) . '"><br>';
			echo '<textarea class="large-text" rows="6" name="kc_sidecar_tpl[' . esc_attr( $key ) . '][body]" aria-label="' . esc_attr__( 'Body', 'kc-sidecar' ) . '">' . esc_textarea( $template['body'] ) . '</textarea>';
			echo '</td></tr>';
		}
		echo '</table>';
		echo '<p class="description">' . esc_html__( 'Placeholders:', 'kc-sidecar' ) . ' <code>' . esc_html( implode( ' ', KC_Sidecar_Mail::PLACEHOLDERS ) ) . '</code></p>';
		submit_button( __( 'Save settings', 'kc-sidecar' ) );
		echo '</form>';

		echo '<h2>' . esc_html__( 'Test connection', 'kc-sidecar' ) . '</h2>';
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
		echo '<input type="hidden" name="action" value="kc_sidecar_test">';
		wp_nonce_field( 'kc_sidecar_test' );
		submit_button( __( 'Test connection', 'kc-sidecar' ), 'secondary', 'submit', false );
		echo '</form></div>';
	}

	/**
	 * Shows the result of the last save or test.
	 */
	private static function notices(): void {
		$notice = isset( $_GET['kc_sidecar_notice'] ) ? sanitize_key( wp_unslash( $_GET['kc_sidecar_notice'] ) ) : ''; // phpcs:ignore WordPress.Security.NonceVerification.Recommended -- display only.
		if ( 'saved' === $notice ) {
			echo '<div class="notice notice-success"><p>' . esc_html__( 'Settings saved.', 'kc-sidecar' ) . '</p></div>';
		} elseif ( 'bad_secret' === $notice ) {
			echo '<div class="notice notice-error"><p>' . esc_html__( 'That shared secret was not stored: it must be 16 to 256 printable characters without spaces; other settings were saved.', 'kc-sidecar' ) . '</p></div>';
		} elseif ( 'bad_url' === $notice ) {
			echo '<div class="notice notice-error"><p>' . esc_html__( 'The sidecar URL must be an http(s) address; other settings were saved.', 'kc-sidecar' ) . '</p></div>';
		}
		$result = get_transient( self::test_key() );
		if ( 'tested' === $notice && is_array( $result ) ) {
			delete_transient( self::test_key() );
			$good = ! empty( $result['ok'] );
			echo '<div class="notice ' . ( $good ? 'notice-success' : 'notice-error' ) . '"><p><strong>';
			echo esc_html( $good ? __( 'The sidecar answered.', 'kc-sidecar' ) : __( 'The sidecar did not accept the ping.', 'kc-sidecar' ) );
			echo '</strong> ' . esc_html( $result['summary'] ) . '</p>';
			if ( '' !== $result['body'] ) {
				echo '<pre style="white-space:pre-wrap">' . esc_html( $result['body'] ) . '</pre>';
			}
			echo '</div>';
		}
	}

	/**
	 * Saves the form.
	 */
	public static function save(): void {
		if ( ! current_user_can( self::CAP ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'kc-sidecar' ), '', array( 'response' => 403 ) );
		}
		check_admin_referer( 'kc_sidecar_save' );
		$notice = 'saved';

		$url = isset( $_POST['kc_sidecar_url'] ) && is_string( $_POST['kc_sidecar_url'] ) ? trim( sanitize_text_field( wp_unslash( $_POST['kc_sidecar_url'] ) ) ) : '';
		if ( '' === $url ) {
			update_option( KC_Sidecar_Plugin::OPT_URL, '', true );
		} else {
			$clean = esc_url_raw( $url, array( 'http', 'https' ) );
			if ( '' === $clean || ! wp_parse_url( $clean, PHP_URL_HOST ) ) {
				$notice = 'bad_url';
			} else {
				update_option( KC_Sidecar_Plugin::OPT_URL, untrailingslashit( $clean ), true );
			}
		}

		if ( ! empty( $_POST['kc_sidecar_forget_secret'] ) ) {
			update_option( KC_Sidecar_Plugin::OPT_SECRET, '', false );
		}
		$secret = isset( $_POST['kc_sidecar_secret'] ) && is_string( $_POST['kc_sidecar_secret'] ) ? trim( wp_unslash( $_POST['kc_sidecar_secret'] ) ) : ''; // phpcs:ignore WordPress.Security.ValidatedSanitizedInput.InputNotSanitized -- validated below, never output.
		if ( '' !== $secret ) {
			if ( preg_match( '/^[\x21-\x7e]{16,256}$/', $secret ) ) {
				update_option( KC_Sidecar_Plugin::OPT_SECRET, $secret, false );
			} else {
				$notice = 'bad_secret';
			}
		}

		$posted    = isset( $_POST['kc_sidecar_tpl'] ) && is_array( $_POST['kc_sidecar_tpl'] ) ? wp_unslash( $_POST['kc_sidecar_tpl'] ) : array(); // phpcs:ignore WordPress.Security.ValidatedSanitizedInput.InputNotSanitized -- each field sanitised below.
		$templates = array();
		foreach ( KC_Sidecar_Mail::defaults() as $key => $default ) {
			$in                = isset( $posted[ $key ] ) && is_array( $posted[ $key ] ) ? $posted[ $key ] : array();
			$templates[ $key ] = array(
				'enabled' => ! empty( $in['enabled'] ),
				'subject' => isset( $in['subject'] ) && is_string( $in['subject'] ) && '' !== trim( $in['subject'] ) ? sanitize_text_field( $in['subject'] ) : $default['subject'],
				'body'    => isset( $in['body'] ) && is_string( $in['body'] ) && '' !== trim( $in['body'] ) ? sanitize_textarea_field( $in['body'] ) : $default['body'],
			);
		}
		update_option( KC_Sidecar_Plugin::OPT_TEMPLATES, $templates, false );

		wp_safe_redirect( self::page_url( array( 'kc_sidecar_notice' => $notice ) ) );
		exit;
	}

	/**
	 * Sends the signed ping and keeps the answer for the next page view.
	 */
	public static function test(): void {
		if ( ! current_user_can( self::CAP ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'kc-sidecar' ), '', array( 'response' => 403 ) );
		}
		check_admin_referer( 'kc_sidecar_test' );
		set_transient( self::test_key(), self::ping(), 5 * MINUTE_IN_SECONDS );
		wp_safe_redirect( self::page_url( array( 'kc_sidecar_notice' => 'tested' ) ) );
		exit;
	}

	/**
	 * `POST {sidecar}/hooks/ping`, blocking.
	 *
	 * @return array ok, summary, body (first 500 characters of the answer).
	 */
	public static function ping(): array {
		if ( ! KC_Sidecar_Plugin::configured() ) {
			return array( 'ok' => false, 'summary' => __( 'Set the sidecar URL and the shared secret first.', 'kc-sidecar' ), 'body' => '' );
		}
		$url      = KC_Sidecar_Plugin::sidecar_url() . '/hooks/ping';
		$body     = (string) wp_json_encode( array( 'site' => home_url(), 'plugin_version' => KC_SIDECAR_VERSION ), JSON_UNESCAPED_SLASHES );
		$response = wp_remote_post(
			$url,
			array(
				'timeout' => 10,
				'headers' => array( 'Content-Type' => 'application/json' ) + KC_Sidecar_Signing::headers( KC_Sidecar_Plugin::secret(), 'POST', $url, $body ),
				'body'    => $body,
			)
		);
		if ( is_wp_error( $response ) ) {
			return array( 'ok' => false, 'summary' => $response->get_error_message(), 'body' => '' );
		}
		$code = (int) wp_remote_retrieve_response_code( $response );
		return array(
			'ok'      => 200 === $code,
			/* translators: 1: HTTP status code, 2: URL */
			'summary' => sprintf( __( 'HTTP %1$d from %2$s', 'kc-sidecar' ), $code, $url ),
			'body'    => mb_substr( (string) wp_remote_retrieve_body( $response ), 0, 500 ),
		);
	}

	/**
	 * Transient key of the current user's last test.
	 */
	private static function test_key(): string {
		return 'kc_sidecar_test_' . get_current_user_id();
	}
}
